"""Links between a Prefect flow run and its MLflow run, both ways (the Prefect side).

The MLflow run carries tags naming the flow run, its address and its deployment, and a line in
its description linking to it; the flow run's artifacts link to the MLflow run and to the model
version. Addresses come from keel.core.ui_links: the team's servers, or where `keel ui` shows
this project.
"""

from __future__ import annotations

from prefect.artifacts import create_link_artifact, create_markdown_artifact
from mlflow.entities import RunTag
from prefect.runtime import deployment, flow_run

from keel.core.ui_links import links
from keel.tracking import client as tracking

NOTE = "mlflow.note.content"  # the run's description (markdown) on its MLflow page


def flow_run_tags() -> dict[str, str]:
    """Tags naming the flow run this task runs in (none outside a flow run)."""
    run_id = flow_run.id
    if not run_id:
        return {}
    tags = {"keel.prefect.flow_run_id": str(run_id), "keel.prefect.flow_run_name": str(flow_run.name or ""),
            "keel.prefect.flow_name": str(flow_run.flow_name or "")}
    if url := links().flow_run(run_id):
        tags["keel.prefect.flow_run_url"] = url
    if name := deployment.name:
        tags["keel.prefect.deployment"] = str(name)
    return tags


def link_runs(experiment_id: str, run_id: str) -> None:
    """Tags the MLflow run with this flow run (and a link line in its description) and gives the
    flow run a link artifact to the MLflow run."""
    tags = flow_run_tags()
    if not tags:
        return
    client = tracking.client()
    note = client.get_run(run_id).data.tags.get(NOTE, "")
    line = f"Prefect flow run: [{tags['keel.prefect.flow_run_name']}]({tags.get('keel.prefect.flow_run_url', '')})"
    if line not in note:
        tags[NOTE] = f"{note}\n\n{line}".strip()
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])  # one request, not one a tag
    if url := links().mlflow_run(experiment_id, run_id):
        create_link_artifact(key="mlflow-run", link=url, link_text=f"MLflow run {run_id}",
                             description="the MLflow run of this flow run: metrics, learning curves, model")


def mlflow_markdown(experiment_id: str | None = None, run_id: str | None = None,
                    model: tuple[str, str | int] | None = None) -> str:
    """Markdown links to an MLflow run and/or a model version ('' when there is no UI to link to)."""
    shown, parts = links(), []
    if run_id and experiment_id and (url := shown.mlflow_run(experiment_id, run_id)):
        parts.append(f"[MLflow run `{run_id[:8]}`]({url})")
    if model and (url := shown.model_version(*model)):
        parts.append(f"[{model[0]} version {model[1]}]({url})")
    return " · ".join(parts)


def data_docs_artifact(key: str, docs_index: str) -> None:
    """A link artifact to Data Docs over http (`keel ui` serves reports/), or, for Data Docs
    elsewhere, a note naming the file: a browser on the Prefect UI's page opens no file:// link."""
    if url := links().report_file(docs_index):
        create_link_artifact(key=key, link=url, link_text="Great Expectations Data Docs",
                             description="Validation results as HTML (`keel ui` serves them)")
    else:
        create_markdown_artifact(key=key, markdown=f"Great Expectations Data Docs: `{docs_index}` (open the file)",
                                 description="Validation results as HTML")

"""What a scoring job is before any row is read: where it writes, which model version, which
input files with their sha256; and whether an earlier job already did exactly that.

`plan_job` is the first step of every `keel.serving.predict.score_files` call, and also all that
the idempotent re-run of `keel predict` needs: it imports neither torch nor Prefect (MLflow's
registry client, pandas and pyarrow at most), so the `keel` command answers a re-run from the
manifest before it starts a Prefect API or loads a model (cli/commands.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from keel.serving.inputs import Inputs, read_inputs
from keel.serving.outputs import Outputs, check_output
from keel.tracking.registry import ModelRef, resolve_model


@dataclass
class ScoreSummary:
    model: dict
    output: str
    errors: str
    manifest: str
    files: list[dict]
    rows_scored: int
    rows_rejected: int
    accuracy: float | None
    labelled_rows: int
    reused: bool
    seconds: float
    model_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def text(self) -> str:
        head = "reused existing output (same inputs and model version; --force recomputes)" if self.reused \
            else f"scored in {self.seconds:.2f} s"
        lines = [f"{self.rows_scored} rows scored, {self.rows_rejected} rejected, from {len(self.files)} file(s); {head}",
                 f"model   {self.model['name']} v{self.model['version']} (run {self.model['run_id']})",
                 f"output  {self.output}"]
        if self.rows_rejected:
            lines.append(f"errors  {self.errors}")
        if self.accuracy is not None:
            lines.append(f"accuracy {self.accuracy:.4f} on {self.labelled_rows} labelled rows")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScoringJob:
    """One job, planned: its outputs (with the earlier job's manifest), the pinned model
    version, the inputs hashed, and the identity a manifest records (model + inputs + format)."""

    outputs: Outputs
    model: ModelRef
    inputs: Inputs
    identity: dict
    started: float

    def reused(self) -> ScoreSummary | None:
        """The earlier job's summary when it scored exactly these inputs with this model version
        into this format, else None."""
        previous = self.outputs.previous
        if previous is None or {k: previous.get(k) for k in self.identity} != self.identity:
            return None
        return ScoreSummary(**{**previous["summary"], "reused": True, "seconds": time.perf_counter() - self.started})


def plan_job(client, reference: str, input_path: str | Path, output: str | Path, fmt: str) -> ScoringJob:
    """Checks the outputs (before any work: keel.serving.outputs.check_output), pins the model
    version and hashes the inputs (photos read, other files hashed by a chunked pass)."""
    started = time.perf_counter()
    outputs = check_output(input_path, output, fmt)
    model = resolve_model(client, reference)
    inputs = read_inputs(input_path, model.inputs)
    identity = {"model": {"name": model.name, "version": model.version, "run_id": model.run_id},
                "inputs": inputs.identity(), "format": fmt}
    if inputs.refused:  # entries the photo listing refused (links out of the folder...): part of what was asked
        identity["refused"] = [{"file": path, "reason": reason} for path, reason in inputs.refused.items()]
    return ScoringJob(outputs, model, inputs, identity, started)


def reused_summary(registry: Callable[[], object], reference: str, input_path: str | Path, output: str | Path,
                   fmt: str) -> ScoreSummary | None:
    """The earlier job's summary when it scored exactly these inputs with the version `reference`
    names now (looked up with the client `registry()` makes), else None: at once, before a
    registry client is made or an input hashed, when no Keel job wrote this output yet (a job
    with work then hashes its inputs once, not twice)."""
    if check_output(input_path, output, fmt).previous is None:
        return None
    return plan_job(registry(), reference, input_path, output, fmt).reused()

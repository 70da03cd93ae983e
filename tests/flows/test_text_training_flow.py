"""The training flow on 300 real SMS messages with each text model -- bert-tiny from scratch,
and minilm loaded from its package's folder as a user's `keel train` loads it: no augmentation
preview, and the worst-classified texts published in MLflow and as a Prefect markdown artifact."""

import numpy as np
import pandas as pd
import pytest
import yaml

from flows.training import training_flow
from keel.core.config import TrainConfig
from keel.stages.evaluation import score_registered_on_split
from keel.tracking import client as tracking
from keel.tracking.promotion import PromotionPolicy
from tests.conftest import REPO
from tests.text_models import sms_rows


@pytest.mark.parametrize("model", ["bert-tiny", "minilm"])
def test_a_text_model_trains_through_the_flow_and_publishes_its_worst_classified_texts(tmp_path, keel_home, model):
    from prefect.client.orchestration import get_client

    sms_rows(300).to_csv(tmp_path / "sms.csv", index=False)
    config = yaml.safe_load((REPO / "conf" / "datasets" / "sms-spam.yaml").read_text())
    config.update(name=f"sms-flow-{model}", train=[{"path": str(tmp_path / "sms.csv")}], validation={"min_rows": 50, "max_rows": 10_000})
    path = tmp_path / f"sms-flow-{model}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    train = TrainConfig(model=model, epochs=1, head_epochs=1, batch_size=32, max_length=32, time_budget=0)
    result = training_flow(dataset_config=str(path), train=train, promotion=PromotionPolicy(floor=0.0))

    assert result.registered.name == f"keel-sms-flow-{model}"
    assert result.trained.epochs_run == (2 if model == "minilm" else 1)  # minilm: the head phase, then fine-tuning
    evaluation = result.metrics["evaluation"]
    table = pd.read_csv(evaluation["worst_classified_csv"], dtype={"text": str}, keep_default_na=False)
    assert len(table) == min(20, evaluation["rows"]) and "worst_classified_png" not in evaluation
    client = tracking.client()
    logged = {a.path for d in ("augmentation", "evaluation") for a in client.list_artifacts(result.run.run_id, d)}
    assert {"evaluation/evaluation_worst_classified.md", "evaluation/evaluation_worst_classified.csv"} <= logged
    assert not any(p.startswith("augmentation/") for p in logged)  # texts are not augmented: nothing to preview
    if model == "minilm":  # the packaged encoder, named as where its weights came from
        assert client.get_run(result.run.run_id).data.tags["keel.pretrained"].startswith("all-MiniLM-L6-v2")
    with get_client(sync_client=True) as prefect:
        # The harness is session-wide: other flows' runs published under the same key too.
        published = [a for a in prefect.read_artifacts() if a.key == "evaluation-worst-classified"]
    # The registered model scores the same rows the same way (what the gate's paired test compares).
    scored = score_registered_on_split(result.registered.model_uri, result.version)
    assert scored["accuracy"] == evaluation["accuracy"]
    assert scored["predictions"] == np.load(evaluation["predictions_path"]).tolist()
    ours = [a for a in published if a.data == evaluation["worst_classified_markdown"]]
    assert len(ours) == 1 and ours[0].type == "markdown"
    assert ours[0].data.splitlines()[2].startswith(f"| {table['true'][0]} | {table['predicted'][0]} |")

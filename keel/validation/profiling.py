"""Inferring a dataset's expectation suite from a reference version (its training data).

The reference teaches: bounds on per-image statistics, class shares, the distributions drift
is measured against, and an autoencoder whose reconstruction error scores anomalies. The
autoencoder trains on the version's training rows. Its threshold and the anomaly score's drift
quantiles are fitted on half of the evaluation *groups* (near-duplicate groups the autoencoder
never saw: new signers, new photos, not near-copies of its training images), and the false-alarm
rate is measured on the other half, so the figure is not the threshold's own percentile.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np

from keel.models.anomaly import AutoencoderConfig, reconstruction_errors, save_autoencoder, train_autoencoder
from keel.core.config import DatasetConfig
from keel.data.versions import DatasetVersion, group_holdout
from keel.validation.drift import reference_quantiles
from keel.validation.suite import inferred_suite, write_suite

# A clean batch of 500 rows at the 99.5th percentile would flag 2-3 good images; at the
# 99.9th percentile times 1.5, none of the 4,120 unseen reference images is flagged.
PERCENTILE = 99.9
MARGIN = 1.5


def behaviour(model, pixels: np.ndarray, threshold: float, seed: int = 0) -> dict[str, float]:
    """The share of flagged images among unseen reference images and among copies made
    anomalous on purpose (inverted, heavy noise, blank)."""
    rng = np.random.default_rng(seed)
    images = np.asarray(pixels, dtype=np.float32)
    noisy = np.clip(images + rng.normal(0, 0.3 * 255, images.shape), 0, 255)
    cases = {"reference_unseen": images, "inverted": 255 - images, "gaussian_noise_0.3": noisy,
             "blank_black": np.zeros_like(images[:1])}
    return {f"flagged_{name}": float((reconstruction_errors(model, x) > threshold).mean()) for name, x in cases.items()}


def held_out_halves(version: DatasetVersion, evaluation_idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation rows in two halves of whole groups: one sets the threshold, the other
    measures the false-alarm rate."""
    check = evaluation_idx[group_holdout(version, evaluation_idx, 0.5, seed)]
    return np.setdiff1d(evaluation_idx, check), check


def profile_reference(config: DatasetConfig, version: DatasetVersion, out: Path, epochs: int = 5, seed: int = 0) -> dict:
    """Writes the inferred suite to `out` (and the autoencoder beside it); returns what was
    learned, the autoencoder and its history for registration."""
    started = time.perf_counter()
    profile = version.profile()
    images = version.images()
    flat = np.asarray(images).reshape(len(images), -1)
    train_idx, evaluation_idx = version.indices("train"), version.indices("evaluation")
    calibration_idx, check_idx = held_out_halves(version, evaluation_idx, seed)
    ae_config = AutoencoderConfig(n_pixels=flat.shape[1], epochs=epochs, seed=seed)
    trained = train_autoencoder(flat[train_idx], ae_config)
    unseen = reconstruction_errors(trained.model, flat[calibration_idx])
    threshold = float(np.percentile(unseen, PERCENTILE) * MARGIN)
    weights = Path(out).with_suffix(".autoencoder.pt")
    sha = save_autoencoder(trained, weights)
    checks = behaviour(trained.model, flat[check_idx], threshold, seed)
    anomaly = {
        "weights": weights.name, "sha256": sha, "threshold": round(threshold, 6), "percentile": PERCENTILE, "margin": MARGIN,
        "architecture": dict(ae_config.__dict__),
        "unseen_reference_errors": {"p50": float(np.percentile(unseen, 50)), "p99": float(np.percentile(unseen, 99)),
                                    f"p{PERCENTILE:g}": float(np.percentile(unseen, PERCENTILE)), "max": float(unseen.max())},
        "behaviour": checks,
        "held_out": {"split": version.split_description, "calibration_rows": int(len(calibration_idx)),
                     "check_rows": int(len(check_idx)),
                     "false_alarm_rate": checks["flagged_reference_unseen"]},
        "model_uri": None,
        "reference_quantiles": reference_quantiles(unseen),
    }
    reference = {"version": version.id, "rows": int(len(profile)), "sources": version.meta["sources"],
                 "profiled": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    doc = inferred_suite(config, profile, reference, anomaly)
    write_suite(doc, Path(out))
    return {"suite": doc, "suite_path": str(out), "weights_path": str(weights), "trained": trained,
            "threshold": threshold, "behaviour": checks, "seconds": time.perf_counter() - started}

"""Benchmark: Keel's default text model against a TF-IDF + logistic-regression baseline on the same
split, and its scoring throughput against a plain `transformers` loop, in one run.

Run it from the repository root:

    .venv/bin/python benchmarks/text.py                                    # SMS spam (data/sms-spam)
    .venv/bin/python benchmarks/text.py --out /tmp/sms.json
    .venv/bin/python benchmarks/text.py --dataset 20news --out /tmp/20news.json   # ../shared/data/text/20news
    .venv/bin/python benchmarks/text.py --dataset 20news --model bert-tiny --max-length 256 --epochs 10
    .venv/bin/python benchmarks/text.py --smoke                            # 300 rows, 1 epoch, 32 tokens: does it run?

Options this script does not know (`--model`, `--max-length`, `--epochs`, `--batch-size` ...) go
to `keel train` unchanged (see `keel train --help`).

Everything lives in one temporary folder: a KEEL_HOME holding a copy of conf/ (the dataset's
data paths made absolute, so the user's files are read where they are and never written) and
its own MLflow store, dataset versions and checkpoints; PREFECT_HOME is temporary too. In this
order it measures:

1. `keel train --dataset NAME` at the YAML's default settings (plus the extra options), as a
   user runs it: a subprocess under `/usr/bin/time -v` (whole-process wall time, peak RSS), cold
   (the dataset is ingested first). Accuracy, macro-F1 and the positive class's F1 (spam; from
   the logged per-class precision and recall) are read back from that KEEL_HOME's MLflow store,
   with the run's per-row evaluation predictions for a paired comparison.
2. The dataset version that run trained on (ingest again in this process: reused, not
   rebuilt): its group-aware split in words, and its leakage (share of evaluation rows with a
   near-copy in training; accuracy of a 1-nearest-neighbour lookup in training).
3. The baseline: scikit-learn TfidfVectorizer (word 1-2-grams, sublinear tf, min_df 2) +
   LogisticRegression, C in {1, 10, 100} chosen by group-aware 3-fold cross-validation
   (macro-F1) on the training rows only (on 20 Newsgroups that is 10 fits of about a minute
   each on 2 cores; `--C 10` fixes it instead), fitted on all the version's training rows (Keel trains on the same rows less the 10 %
   it holds out, in whole groups, for early stopping) and scored on the same evaluation rows
   with the same metric code as Keel (keel.training.evaluate.classification_metrics).
4. Scoring throughput of the model just registered, on a CSV of the version's texts (id, text,
   label): (a) `keel predict` as a process under `/usr/bin/time -v`; (b)
   keel.serving.predict.score_files in this process, twice with force (the second is a
   long-running worker's steady state); (c) the model alone: the loaded classifier's
   probabilities on already tokenized texts; (d) the course's plain loop in the same run:
   `AutoTokenizer` + the same weights in float32 eval mode, batch 32, padding="longest", no
   sorting by length (benchmarks/text_scoring.py).

Targets (issue 14, 2 CPU cores): SMS spam accuracy >= 0.990 and spam F1 >= 0.95 on the
group-aware evaluation split, `keel train` <= 5 min wall; 20 Newsgroups: beat the baseline.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for `benchmarks.*` when run as a script

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from benchmarks.train_sign_mnist import ForeignCpu, machine, time_v_figures  # noqa: E402

SMOKE_ROWS = 300
SMOKE_TRAIN = ["--epochs", "1", "--head-epochs", "1", "--max-length", "32"]
TARGETS = {"sms-spam": {"accuracy": 0.990, "positive_f1": 0.95, "wall_seconds": 300.0}}
C_GRID = (1.0, 10.0, 100.0)


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="Any other option is passed to `keel train` as it is.")
    parser.add_argument("--dataset", default="sms-spam", help="conf/datasets/NAME.yaml (sms-spam, 20news)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a quick check that everything runs: {SMOKE_ROWS} rows, `keel train {' '.join(SMOKE_TRAIN)}`")
    parser.add_argument("--C", type=float, nargs="+", default=list(C_GRID),
                        help="the baseline's inverse regularisation; several values: chosen by cross-validation")
    parser.add_argument("--folds", type=int, default=3,
                        help="cross-validation folds (whole groups) for C, fitted on both cores at once")
    parser.add_argument("--score-rows", type=int, help="score only this many texts (a seeded sample); default all")
    parser.add_argument("--repeats", type=int, default=2, help="passes of the model alone (the best one counts)")
    parser.add_argument("--skip-scoring", action="store_true", help="no scoring throughput (step 4)")
    parser.add_argument("--out", metavar="PATH", help="also write all figures to this JSON file")
    return parser.parse_known_args()


# --------------------------------------------------------------------------- the temporary home


def make_home(folder: Path, dataset: str, smoke: bool) -> Path:
    """A KEEL_HOME with a copy of conf/ whose dataset YAML reads its files by absolute path
    (with --smoke: a stratified sample of SMOKE_ROWS rows written into the home)."""
    home = folder / "keel_home"
    shutil.copytree(REPO / "conf", home / "conf")
    path = home / "conf" / "datasets" / f"{dataset}.yaml"
    if not path.exists():
        raise SystemExit(f"conf/datasets/{dataset}.yaml does not exist; pass --dataset sms-spam or 20news")
    raw = yaml.safe_load(path.read_text())
    for part in ("train", "test"):
        for source in raw.get(part) or []:
            source["path"] = str((REPO / "conf" / "datasets" / source["path"]).resolve())
            if not Path(source["path"]).exists():
                raise SystemExit(f"{source['path']} (conf/datasets/{dataset}.yaml) does not exist: "
                                 "copy the file there first (data/README.md says where it comes from)")
    if smoke:
        raw["train"] = [smoke_sample(raw, home / "data" / dataset)]
        raw.pop("test", None)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return home


def smoke_sample(raw: dict, folder: Path) -> dict:
    """A stratified sample of SMOKE_ROWS rows of the first training file as a new gzip CSV; its source entry."""
    table = pd.read_csv(raw["train"][0]["path"], dtype=str, keep_default_na=False)
    label = raw.get("label_column", "label")
    share, rng = SMOKE_ROWS / len(table), np.random.default_rng(0)
    keep = [i for rows in table.groupby(label).indices.values()
            for i in rng.choice(rows, min(len(rows), max(2, round(len(rows) * share))), replace=False)]
    sample = table.iloc[np.sort(keep)]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "smoke.csv.gz"
    data = gzip.compress(sample.to_csv(index=False).encode(), mtime=0)
    target.write_bytes(data)
    return {"path": str(target), "sha256": hashlib.sha256(data).hexdigest()}


def environment(folder: Path, home: Path) -> dict:
    env = dict(os.environ)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL"):
        env.pop(name, None)
    env.update(KEEL_HOME=str(home), PREFECT_HOME=str(folder / "prefect_home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def timed_process(command: list[str], env: dict, cwd: Path, log: Path) -> dict:
    """Runs `command` under /usr/bin/time -v; its wall seconds, peak RSS (MB), exit status and output."""
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    foreign, started = ForeignCpu(), time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(timer + command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    figures = {"wall_seconds": time.perf_counter() - started, "peak_rss_mb": None, "measured_by": "perf_counter",
               "returncode": done.returncode, "foreign_cpu_seconds": foreign.seconds()}
    output = log.read_text(errors="replace")
    if timer:
        figures.update(time_v_figures(output))
    figures["output"] = output
    return figures


# --------------------------------------------------------------------------- 1. keel train


def keel_train(folder: Path, home: Path, dataset: str, extra: list[str]) -> dict:
    """`keel train --dataset NAME [extra]` in a subprocess; its wall time, peak RSS and the run's figures."""
    command = [str(Path(sys.executable).parent / "keel"), "train", "--dataset", dataset, *extra]
    print(f"[keel train] {' '.join(command[1:])}  (KEEL_HOME={home})", flush=True)
    process = timed_process(command, environment(folder, home), home, folder / "train.log")
    output = process.pop("output")
    if process["returncode"] != 0:
        print(output[-6000:])
        raise SystemExit(f"[keel train] failed with exit status {process['returncode']}")
    tail = output.rstrip().splitlines()
    start = max((i for i, line in enumerate(tail) if line.startswith("dataset   ")), default=len(tail) - 8)
    print("\n".join("[keel train] " + line for line in tail[start:] if not line.startswith("\t")), flush=True)
    return {"command": "keel " + " ".join(command[1:]), **process, **run_figures(home, dataset, folder)}


def run_figures(home: Path, dataset: str, folder: Path) -> dict:
    """The newest run of the dataset's experiment in `home`'s MLflow store: its metrics, settings,
    per-row evaluation predictions and the model version it registered."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"keel-{dataset}")
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags

    def history(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    predictions = client.download_artifacts(run.info.run_id, "evaluation/evaluation_predictions.npy", str(folder))
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "evaluation/evaluation_per_class.json",
                                                      str(folder))).read_text())  # MLflow's table: orient "split"
    per_class = [dict(zip(table["columns"], row)) for row in table["data"]]
    versions = [v for v in client.search_model_versions(f"name = 'keel-{dataset}'") if v.run_id == run.info.run_id]
    return {
        "run_id": run.info.run_id, "dataset_version": tags.get("keel.dataset_version"), "params": dict(params),
        "model": params.get("model"), "max_length": params.get("max_length"), "device": tags.get("keel.device"),
        "precision": tags.get("keel.precision"), "pretrained": tags.get("keel.pretrained"),
        "accuracy": metrics.get("evaluation_accuracy"), "macro_f1": metrics.get("evaluation_macro_f1"),
        "precision_per_class": {row["class"]: row["precision"] for row in per_class},
        "recall_per_class": {row["class"]: row["recall"] for row in per_class},
        "train_seconds": metrics.get("train_seconds"), "loop_seconds": metrics.get("loop_seconds"),
        "best_epoch": metrics.get("best_epoch"), "epoch_seconds": history("epoch_seconds"),
        "texts_per_second": history("images_per_second"), "val_accuracy": history("val_accuracy"),
        "predictions": np.load(predictions).tolist(),
        "registered": {"name": versions[0].name, "version": str(versions[0].version)} if versions else None,
    }


def check_rows(version, keel: dict) -> None:
    """Stops unless the run's per-row predictions give its logged accuracy on this version's
    evaluation rows (so the paired comparison pairs the same rows)."""
    truth = version.labels()[np.sort(version.indices("evaluation"))]
    predictions = np.asarray(keel["predictions"])
    if len(predictions) != len(truth) or abs(float((predictions == truth).mean()) - keel["accuracy"]) > 1e-6:
        raise SystemExit(f"the run's {len(predictions)} evaluation predictions do not match the version's "
                         f"{len(truth)} evaluation rows and its logged accuracy {keel['accuracy']:.4f}")


def f1_of(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


# --------------------------------------------------------------------------- 2.-3. split and baseline


def the_version(home: Path, dataset: str, expected: str | None):
    """The dataset version `keel train` stored (ingested again here: reused, not rebuilt)."""
    from keel.core.config import load_dataset_config
    from keel.modalities import ingest

    started = time.perf_counter()
    result = ingest(load_dataset_config(home / "conf" / "datasets" / f"{dataset}.yaml"), root=home / "data" / "versions")
    if expected and result.version.id != expected:
        raise SystemExit(f"ingest here gave version {result.version.id}, keel train trained on {expected}")
    return result.version, {"version": result.version.id, "reused": result.reused,
                            "seconds": time.perf_counter() - started}


def split_figures(version) -> dict:
    meta, leak = version.meta, version.leakage.get("evaluation", {})
    return {"description": version.split_description, "rows": meta.get("rows"), "class_names": meta["class_names"],
            "train_rows": int(len(version.indices("train"))), "evaluation_rows": int(len(version.indices("evaluation"))),
            "test_rows": int(len(version.indices("test"))), "quarantined": meta.get("quarantined"),
            "near_copy_share": leak.get("near_copy_share"), "nn_accuracy": leak.get("nn_accuracy"),
            "leakage_threshold": (meta.get("leakage") or {}).get("threshold")}


def baseline(version, grid: list[float], folds: int) -> dict:
    """TF-IDF + logistic regression fitted on the version's training rows (C by group-aware
    cross-validation on them when `grid` has several values), scored on its evaluation rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline

    from keel.training.evaluate import classification_metrics

    texts, targets = np.asarray(version.texts(), dtype=object), version.labels().astype(np.int64)
    train, evaluation = np.sort(version.indices("train")), np.sort(version.indices("evaluation"))
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, strip_accents="unicode"),
                             LogisticRegression(C=grid[0], max_iter=3000))
    foreign, started = ForeignCpu(), time.perf_counter()
    cv = None
    if len(grid) > 1:
        groups = version.groups()
        folds = min(folds, int(np.bincount(targets[train]).min()))
        splitter = (StratifiedGroupKFold(folds, shuffle=True, random_state=0) if groups is not None
                    else StratifiedKFold(folds, shuffle=True, random_state=0))
        search = GridSearchCV(pipeline, {"logisticregression__C": grid}, scoring="f1_macro", cv=splitter, refit=True,
                              n_jobs=-1)
        search.fit(texts[train], targets[train], **({"groups": groups[train]} if groups is not None else {}))
        pipeline, chosen = search.best_estimator_, float(search.best_params_["logisticregression__C"])
        cv = {str(c): float(s) for c, s in zip(grid, search.cv_results_["mean_test_score"])}
    else:
        pipeline.fit(texts[train], targets[train])
        chosen = grid[0]
    fit_seconds = time.perf_counter() - started
    predictions = pipeline.predict(texts[evaluation])
    metrics = classification_metrics(targets[evaluation], predictions, version.meta["class_names"])
    return {"C": chosen, "cv_macro_f1_by_C": cv, "folds": folds if cv else None, "fit_seconds": fit_seconds,
            "foreign_cpu_seconds": foreign.seconds(), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "per_class_f1": {row["class"]: row["f1"] for row in metrics["per_class"]},
            "features": len(pipeline[0].vocabulary_), "predictions": predictions.tolist()}


def positive_class(class_names: list[str], targets: np.ndarray) -> str | None:
    """The class whose F1 the report quotes: spam, else the rarer of two; None for more classes."""
    if "spam" in class_names:
        return "spam"
    return class_names[int(np.argmin(np.bincount(targets, minlength=2)))] if len(class_names) == 2 else None


def paired(version, keel_predictions: list[int], baseline_predictions: list[int]) -> dict:
    """On the same evaluation rows: where exactly one of the two is right, and an exact
    two-sided sign test (McNemar) of whether that split is even."""
    from scipy.stats import binomtest

    truth = version.labels()[np.sort(version.indices("evaluation"))]
    keel_right = np.asarray(keel_predictions) == truth
    base_right = np.asarray(baseline_predictions) == truth
    only_keel, only_base = int((keel_right & ~base_right).sum()), int((base_right & ~keel_right).sum())
    p = binomtest(only_keel, only_keel + only_base).pvalue if only_keel + only_base else 1.0
    return {"only_keel_right": only_keel, "only_baseline_right": only_base, "p_value": float(p)}


# --------------------------------------------------------------------------- report


def verdict(keel: dict, base: dict, pair: dict, positive: str | None) -> str:
    """Which won, in one plain sentence."""
    name = f"Keel's {keel['model']}"
    delta = (f"accuracy {keel['accuracy']:.4f} vs {base['accuracy']:.4f}, macro-F1 {keel['macro_f1']:.4f} vs "
             f"{base['macro_f1']:.4f}" + (f", {positive} F1 {keel['positive_f1']:.4f} vs "
                                          f"{base['per_class_f1'][positive]:.4f}" if positive else ""))
    noise = (f"; {pair['only_keel_right']} evaluation rows only Keel gets right, {pair['only_baseline_right']} only the "
             f"baseline (sign test p = {pair['p_value']:.3f}" + (": within noise)" if pair["p_value"] >= 0.05 else ")"))
    if keel["accuracy"] > base["accuracy"] and keel["macro_f1"] > base["macro_f1"]:
        return f"{name} BEATS the TF-IDF + logistic-regression baseline ({delta}){noise}."
    if keel["accuracy"] <= base["accuracy"] and keel["macro_f1"] <= base["macro_f1"]:
        return (f"{name} does NOT beat the TF-IDF + logistic-regression baseline ({delta}){noise}: the linear "
                "model is as good or better here.")
    return f"Neither wins outright: {name} and the TF-IDF baseline trade places ({delta}){noise}."


def report(f: dict) -> str:
    from benchmarks.text_scoring import scoring_lines

    m, s, k, b = f["machine"], f["split"], f["keel"], f["baseline"]
    positive = f["positive_class"]
    lines = ["", "=" * 90,
             f"Text benchmark: {f['dataset']}" + ("  [SMOKE: a tiny sample, 1 epoch; no figure here is a result]"
                                                 if f["smoke"] else ""),
             f"machine: {m['cpu']}, {m['cpu_count']} cores, torch {m['torch']}, torch threads here {m['torch_threads']}"
             + (f", GPU {m['cuda']}" if m["cuda"] else ""),
             f"load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in f['load_before'])}; after: "
             f"{', '.join(f'{x:.2f}' for x in m['load_average'])}  (other processes skew timings)", "-" * 90,
             f"dataset version {f['ingest']['version'][:12]}: {s['rows']:,} rows stored, {s['quarantined']} quarantined; "
             f"{s['train_rows']:,} training, {s['evaluation_rows']:,} evaluation rows",
             f"split: {s['description']}",
             f"leakage of the evaluation rows: {s['near_copy_share']:.1%} have a near-copy in training "
             f"(cosine >= {s['leakage_threshold']}); a 1-NN lookup in training scores {s['nn_accuracy']:.4f}", "-" * 90,
             f"{'on the evaluation rows':<44} {'accuracy':>9} {'macro-F1':>9}" + (f" {positive + ' F1':>9}" if positive else ""),
             f"{'TF-IDF 1-2-grams + logistic regression':<44} {b['accuracy']:>9.4f} {b['macro_f1']:>9.4f}"
             + (f" {b['per_class_f1'][positive]:>9.4f}" if positive else ""),
             f"{'Keel ' + k['model'] + ' (max_length ' + str(k['max_length']) + ')':<44} {k['accuracy']:>9.4f} "
             f"{k['macro_f1']:>9.4f}" + (f" {k['positive_f1']:>9.4f}" if positive else ""),
             f"baseline: C = {b['C']:g}" + (f" (group-aware {b['folds']}-fold CV macro-F1 by C: "
                                            + ", ".join(f"{c}: {v:.4f}" for c, v in b["cv_macro_f1_by_C"].items()) + ")"
                                            if b["cv_macro_f1_by_C"] else "")
             + f", {b['features']:,} features, fit {b['fit_seconds']:.1f} s",
             f"keel train: {k['command']}",
             f"  {k['wall_seconds']:.1f} s wall, peak RSS {k['peak_rss_mb'] or float('nan'):,.0f} MB ({k['measured_by']}); "
             f"training loop {k['loop_seconds']:.1f} s, {len(k['epoch_seconds'])} epoch(s) "
             f"({', '.join(f'{x:.1f}' for x in k['epoch_seconds'])} s), {k['device']}, {k['precision']}; "
             f"CPU used by other processes meanwhile {k['foreign_cpu_seconds']:.1f} s",
             "", verdict(k, b, f["paired"], positive)]
    for target, figure, value in f.get("targets", []):
        lines.append(f"target {target}: {figure}  {value}")
    if "scoring" in f:
        lines += ["-" * 90, *scoring_lines(f["scoring"])]
    lines.append("=" * 90)
    return "\n".join(lines)


def judge(f: dict) -> list[tuple[str, str, str]]:
    """(target, figure, MET/MISSED) of the issue's targets for this dataset; not judged on --smoke."""
    k, b = f["keel"], f["baseline"]
    if f["smoke"]:
        return [("(all)", "not judged", "(--smoke)")]
    if f["dataset"] in TARGETS:
        t = TARGETS[f["dataset"]]
        return [(f"accuracy >= {t['accuracy']}", f"{k['accuracy']:.4f}", "MET" if k["accuracy"] >= t["accuracy"] else "MISSED"),
                (f"{f['positive_class']} F1 >= {t['positive_f1']}", f"{k['positive_f1']:.4f}",
                 "MET" if k["positive_f1"] >= t["positive_f1"] else "MISSED"),
                (f"`keel train` wall <= {t['wall_seconds']:.0f} s", f"{k['wall_seconds']:.1f} s",
                 "MET" if k["wall_seconds"] <= t["wall_seconds"] else "MISSED")]
    beat = k["accuracy"] > b["accuracy"]
    return [("beat the TF-IDF baseline (accuracy)", f"{k['accuracy']:.4f} vs {b['accuracy']:.4f}",
             "MET" if beat else "MISSED")]


def main() -> int:
    args, extra = parse_args()
    unknown = [a for a in extra if a.startswith("--dataset") or a == "--dataset-config"]
    if unknown:
        raise SystemExit(f"{unknown[0]}: pass the dataset as --dataset NAME (before any keel train option)")
    figures: dict = {"dataset": args.dataset, "smoke": args.smoke, "load_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="keel-text-bench-") as tmp:
        folder = Path(tmp)
        home = make_home(folder, args.dataset, args.smoke)
        figures["keel"] = keel_train(folder, home, args.dataset, [*(SMOKE_TRAIN if args.smoke else []), *extra])
        os.environ.update(environment(folder, home))  # this process reads the same home from here on
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL"):
            os.environ.pop(name, None)
        version, figures["ingest"] = the_version(home, args.dataset, figures["keel"]["dataset_version"])
        figures["split"] = split = split_figures(version)
        print(f"[split] {split['description']}", flush=True)
        targets = version.labels()[np.sort(version.indices("evaluation"))]
        positive = figures["positive_class"] = positive_class(split["class_names"], targets)
        k = figures["keel"]
        check_rows(version, k)
        k["positive_f1"] = f1_of(k["precision_per_class"].get(positive), k["recall_per_class"].get(positive)) \
            if positive else None
        print(f"[baseline] TF-IDF + logistic regression, C in {args.C} ...", flush=True)
        figures["baseline"] = baseline(version, args.C, args.folds)
        figures["paired"] = paired(version, k["predictions"], figures["baseline"]["predictions"])
        if not args.skip_scoring:
            from benchmarks.text_scoring import scoring

            if not k["registered"]:
                raise SystemExit("keel train registered no model version: nothing to score (see its output above)")
            figures["scoring"] = scoring(folder, home, version, k["registered"], args.score_rows, args.repeats)
        del version
    figures["machine"] = machine()
    figures["targets"] = judge(figures)
    print(report(figures))
    if args.out:
        for part in ("keel", "baseline"):
            figures[part].pop("predictions", None)  # per-row lists: the paired figures summarise them
        target = Path(args.out)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps(figures, indent=2, default=str))
        partial.replace(target)
        print(f"figures written to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

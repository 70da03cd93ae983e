"""Scoring throughput of a registered text model, beside a plain `transformers` loop (step 4 of
benchmarks/text.py, which runs it; not a script of its own).

On a CSV of the dataset version's stored texts (id, text, label as the class name), in this order:
(a) `keel predict` as a user runs it (a subprocess under /usr/bin/time -v: imports, Prefect's
temporary API, the flow, reading, scoring and writing); (b) keel.serving.predict.score_files in
this process, twice with force (the first call loads the model; the second is a long-running
worker's steady state); (c) the model alone: the verified classifier's probabilities
(keel.models.device.predict_logits: length order, bf16 where it pays) on texts tokenized
beforehand, batch keel.serving.predict.TEXT_BATCH, best of `repeats` passes; (d) the course's
way: AutoTokenizer (the packaged MiniLM folder, or a fast tokenizer over the registered model's
tokenizer.json for bert-tiny) + the same weights in float32 eval mode, batch 32 in file order,
padding="longest", truncation at the model's max_length, masked mean pooling and the head.
"""

from __future__ import annotations

import copy
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.train_sign_mnist import ForeignCpu

PLAIN_BATCH = 32


def scoring(folder: Path, home: Path, version, registered: dict, rows: int | None, repeats: int) -> dict:
    """Texts/s of (a) `keel predict`, (b) score_files, (c) the model alone, (d) the plain loop."""
    from benchmarks.text import environment, timed_process
    from keel.serving.pyfunc import load_verified_model

    texts = version.texts()
    keep = np.arange(len(texts))
    if rows and rows < len(texts):
        keep = np.sort(np.random.default_rng(0).choice(len(texts), rows, replace=False))
    names = np.asarray(version.meta["class_names"])
    frame = pd.DataFrame({"id": [str(i) for i in keep], "text": [texts[i] for i in keep],
                          "label": names[version.labels()[keep]]})
    texts = frame["text"].tolist()
    (folder / "score").mkdir(exist_ok=True)
    csv = folder / "score" / "texts.csv"
    frame.to_csv(csv, index=False)
    reference = f"{registered['name']}/{registered['version']}"
    out = {"model": reference, "rows": len(texts), "csv_mb": csv.stat().st_size / 2 ** 20}

    print(f"[scoring] (a) keel predict --model {reference} on {len(texts):,} texts ...", flush=True)
    command = [str(Path(sys.executable).parent / "keel"), "predict", "--model", reference, "--input", str(csv),
               "--output", str(folder / "score" / "cli.parquet")]
    process = timed_process(command, environment(folder, home), home, folder / "predict.log")
    output = process.pop("output")
    if process["returncode"] != 0:
        print(output[-4000:])
        raise SystemExit(f"[keel predict] failed with exit status {process['returncode']}")
    scored = re.search(r"(\d+) rows scored, (\d+) rejected", output)
    process["rows_scored"], process["rows_rejected"] = (int(scored[1]), int(scored[2])) if scored else (None, None)
    out["keel_predict"] = process

    out["score_files"] = score_files_twice(csv, folder / "score" / "inprocess.parquet", reference)
    classifier = load_verified_model(f"models:/{reference}")
    out["model_alone"], keel_top = model_alone(classifier, texts, repeats)
    out["plain"], plain_top = plain_loop(classifier, texts)
    out["top_class_agreement"] = float((keel_top == plain_top).mean()) if len(texts) else None
    return out


def score_files_twice(csv: Path, output: Path, reference: str) -> dict:
    from keel.serving.predict import score_files
    from keel.tracking import client as tracking

    client = tracking.client()
    calls = []
    for label in ("first", "second"):
        foreign = ForeignCpu()
        summary = score_files(client, reference, csv, output, force=True)
        calls.append({"call": label, "rows_scored": summary.rows_scored, "rows_rejected": summary.rows_rejected,
                      "seconds": summary.seconds, "model_seconds": summary.model_seconds,
                      "accuracy": summary.accuracy, "foreign_cpu_seconds": foreign.seconds()})
        print(f"[scoring] (b) score_files, {label} call: {summary.rows_scored} rows in {summary.seconds:.2f} s "
              f"(model {summary.model_seconds:.2f} s)", flush=True)
    return {"first": calls[0], "second": calls[1]}


def model_alone(classifier, texts: list[str], repeats: int) -> tuple[dict, np.ndarray]:
    """The loaded classifier's probabilities on texts tokenized beforehand: seconds of the best
    of `repeats` passes, and the tokenizing seconds apart."""
    import torch

    from keel.data.tokenizer import encode, load_tokenizer, pad_batch
    from keel.serving.predict import TEXT_BATCH

    config = classifier.config
    started = time.perf_counter()
    ids, lengths = encode(load_tokenizer(config["tokenizer_file"]), texts, int(config["max_length"]))
    inputs = pad_batch(ids)
    tokenize_seconds = time.perf_counter() - started
    classifier.probabilities(inputs[:TEXT_BATCH], TEXT_BATCH)  # warm-up
    best, foreign = float("inf"), ForeignCpu()
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        with torch.inference_mode():
            probabilities = classifier.probabilities(inputs, TEXT_BATCH)
        best = min(best, time.perf_counter() - started)
    print(f"[scoring] (c) model alone: {len(texts)} texts in {best:.2f} s (best of {repeats}; "
          f"tokenizing {tokenize_seconds:.2f} s)", flush=True)
    figures = {"seconds": best, "tokenize_seconds": tokenize_seconds, "batch": TEXT_BATCH, "repeats": repeats,
               "precision": classifier.precision, "device": str(classifier.device),
               "max_length": int(config["max_length"]), "truncated_share": float((lengths > int(config["max_length"])).mean()),
               "mean_tokens": float(np.mean([len(row) for row in ids])), "foreign_cpu_seconds": foreign.seconds()}
    return figures, probabilities.argmax(1).cpu().numpy()


def course_tokenizer(config: dict):
    """What the course would load: AutoTokenizer from the packaged MiniLM folder, or a fast
    tokenizer over the registered tokenizer.json (bert-tiny's vocabulary is the version's own)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from keel.data.tokenizer import minilm_folder

    if config["architecture"] == "minilm":
        return AutoTokenizer.from_pretrained(str(minilm_folder()), local_files_only=True)
    return PreTrainedTokenizerFast(tokenizer_file=config["tokenizer_file"], pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def plain_loop(classifier, texts: list[str]) -> tuple[dict, np.ndarray]:
    """The course's loop on the same weights: tokenize each batch of 32 in file order, pad to
    its longest, float32, eval mode, no gradients; total seconds and the forward passes' share."""
    import torch

    from keel.data.tokenizer import encode, load_tokenizer

    config = classifier.config
    max_length = int(config["max_length"])
    tokenizer = course_tokenizer(config)
    model = copy.deepcopy(classifier.model).float().eval().cpu()
    bert, head = model.features.bert, model.head
    sample = texts[:200]  # the two tokenizers must give the same ids, else the comparison is not fair
    keel_ids = encode(load_tokenizer(config["tokenizer_file"]), sample, max_length)[0]
    plain_ids = tokenizer(sample, truncation=True, max_length=max_length)["input_ids"]
    same_ids = float(np.mean([a == b for a, b in zip(keel_ids, plain_ids)])) if sample else None
    top, forward, foreign = [], 0.0, ForeignCpu()
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(texts), PLAIN_BATCH):
            batch = tokenizer(texts[start:start + PLAIN_BATCH], padding="longest", truncation=True,
                              max_length=max_length, return_tensors="pt")
            tick = time.perf_counter()
            hidden = bert(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            logits = head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))
            top.append(logits.softmax(-1).argmax(1))
            forward += time.perf_counter() - tick
    seconds = time.perf_counter() - started
    print(f"[scoring] (d) plain transformers loop: {len(texts)} texts in {seconds:.2f} s "
          f"(forward passes {forward:.2f} s)", flush=True)
    figures = {"seconds": seconds, "forward_seconds": forward, "batch": PLAIN_BATCH, "precision": "fp32",
               "tokenizer": type(tokenizer).__name__, "same_token_ids_share": same_ids,
               "torch_threads": torch.get_num_threads(), "foreign_cpu_seconds": foreign.seconds()}
    return figures, (torch.cat(top).numpy() if top else np.zeros(0, dtype=np.int64))


def scoring_lines(s: dict) -> list[str]:
    """The scoring figures as report lines, texts/s beside the plain loop's."""
    n, plain, alone = s["rows"], s["plain"], s["model_alone"]
    first, second = s["score_files"]["first"], s["score_files"]["second"]
    rate = {  # label: (seconds, CPU seconds other processes used meanwhile)
        "(a) `keel predict` process (imports, Prefect API, flow, read, score, write)":
            (s["keel_predict"]["wall_seconds"], s["keel_predict"]["foreign_cpu_seconds"]),
        "(b) score_files, first call (loads the model)": (first["seconds"], first["foreign_cpu_seconds"]),
        "(b) score_files, second call (steady state)": (second["seconds"], second["foreign_cpu_seconds"]),
        f"(c) model alone ({alone['precision']}, batch {alone['batch']}, tokenized beforehand)":
            (alone["seconds"], alone["foreign_cpu_seconds"] / max(1, alone["repeats"])),
        "(d) plain transformers loop: tokenize + forward (fp32, batch 32)": (plain["seconds"], plain["foreign_cpu_seconds"]),
        "(d) the same, its forward passes only": (plain["forward_seconds"], None),
    }
    lines = [f"Scoring {n:,} texts with {s['model']} (max_length {alone['max_length']}, {alone['truncated_share']:.1%} "
             f"truncated, {alone['mean_tokens']:.0f} tokens on average; CSV {s['csv_mb']:.2f} MB)",
             f"  {'':<76} {'seconds':>10} {'texts/s':>9}  other processes' CPU s"]
    for label, (seconds, foreign) in rate.items():
        lines.append(f"  {label:<76} {seconds:8.2f} s {n / seconds:9,.0f}" + (f"  {foreign:.1f}" if foreign is not None else ""))
    peak = s["keel_predict"]["peak_rss_mb"]
    lines += [f"  `keel predict` peak RSS {peak or float('nan'):,.0f} MB ({s['keel_predict']['measured_by']}); "
              f"tokenizing alone {alone['tokenize_seconds']:.2f} s",
              f"  ratios: model alone / plain forward passes = {plain['forward_seconds'] / alone['seconds']:.2f}x; "
              f"score_files steady / plain loop = {plain['seconds'] / s['score_files']['second']['seconds']:.2f}x; "
              f"`keel predict` / plain loop = {plain['seconds'] / s['keel_predict']['wall_seconds']:.2f}x  (> 1: Keel faster)",
              f"  same top class, model alone vs plain loop: {s['top_class_agreement']:.2%}; identical token ids "
              f"(first 200 texts), Keel's tokenizer vs {plain['tokenizer']}: {plain['same_token_ids_share']:.0%}"]
    return lines

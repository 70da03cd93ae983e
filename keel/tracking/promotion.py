"""Champion/challenger promotion: the gate, the alias audit trail, safe alias moves, rollback.

MLflow keeps no history of which version held an alias. Keel appends every alias move to the
registered model's tags in the tracking store (`keel.audit.<time>-<nonce>` = JSON event), so
the history lives wherever the registry lives and any client can read it. Each move writes a
key of its own, so concurrent moves lose nothing; the registered model's description shows the
same history in words, rebuilt from all those tags after every move.

Alias moves are compare-and-set: under a registry-wide lock (a marker registered model whose
creation the store makes atomic), the alias's current version is re-read and the move is
refused if it is not the one the caller decided against.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
import time
import uuid
from contextlib import contextmanager

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from keel.core.contracts import Verdict
from keel.core.errors import KeelError
from keel.core.secrets import redact_data

# mlflow and scipy are imported where they are used: the command line reads PromotionPolicy
# for its options and help, and must start without them.

CHALLENGER = "challenger"
CHAMPION = "champion"
BOOTSTRAP_DRAWS = 4000
BOOTSTRAP_SEED = 0
AUDIT_PREFIX = "keel.audit."
LOCK_SUFFIX = ".keel-alias-lock"
HISTORY_HEADING = "#### Alias history (written by Keel from the keel.audit.* tags)"
DESCRIPTION_LIMIT = 5000  # characters of a registered model's or version's description in MLflow's SQL stores


class PromotionPolicy(BaseModel):
    """When a challenger may become champion."""

    model_config = ConfigDict(extra="forbid")

    floor: float = Field(default=0.9, ge=0.0, le=1.0,
                         description="minimum evaluation accuracy; the only test when there is no champion yet")
    min_improvement: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="accuracy gain over the champion that must be shown on the same evaluation rows: the lower end "
                    "of the paired bootstrap interval of the difference must be above it (0: any real gain)")
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1.0,
        description="confidence of the paired comparison with the champion: McNemar's exact one-sided p-value must "
                    "be below 1 - confidence, and the bootstrap interval of the accuracy difference has this level")
    max_recall_drop: float = Field(default=0.02, ge=0.0, le=1.0,
                                   description="largest allowed fall of any class's recall against the champion")


class PromotionError(KeelError):
    """An alias move that cannot be done (unknown version, nothing to roll back to, ...)."""


class AliasConflict(PromotionError):
    """The alias moved between the decision and the write."""


def paired_comparison(challenger_correct: np.ndarray, champion_correct: np.ndarray, confidence: float = 0.95,
                      draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> dict:
    """Two models scored on the same rows, compared row by row (both results deterministic).

    b = rows only the challenger gets right, c = rows only the champion gets right. McNemar's
    exact test (b of b + c under p = 1/2, one-sided: is the challenger better?) gives the p-value;
    a paired bootstrap (multinomial draws of (b, c, rest) over the n rows) gives the percentile
    interval of the accuracy difference (b - c) / n at `confidence`.
    """
    challenger_correct = np.asarray(challenger_correct, dtype=bool)
    champion_correct = np.asarray(champion_correct, dtype=bool)
    if challenger_correct.ndim != 1 or challenger_correct.shape != champion_correct.shape:
        raise ValueError(f"per-row correctness of different shapes: challenger {challenger_correct.shape}, "
                         f"champion {champion_correct.shape}; both models must be scored on the same rows")
    n = len(challenger_correct)
    if not n:
        raise ValueError("no evaluation rows to compare the models on")
    b = int(np.count_nonzero(challenger_correct & ~champion_correct))
    c = int(np.count_nonzero(champion_correct & ~challenger_correct))
    if b + c:
        from scipy.stats import binomtest

        p_value = float(binomtest(b, b + c, 0.5, alternative="greater").pvalue)
    else:
        p_value = 1.0  # the models agree on every row: nothing speaks for the challenger
    counts = np.random.default_rng(seed).multinomial(n, np.array([b, c, n - b - c]) / n, size=draws)
    differences = (counts[:, 0] - counts[:, 1]) / n
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    return {"difference": (b - c) / n, "ci_low": float(low), "ci_high": float(high), "p_value": p_value,
            "b": b, "c": c, "rows": n}


def _p(p_value: float) -> str:
    return f"{p_value:.3f}" if p_value >= 0.001 else f"{p_value:.1e}"


def decide(challenger: dict, champion: dict | None, policy: PromotionPolicy,
           challenger_version: str, champion_version: str | None,
           challenger_correct: np.ndarray | None = None, champion_correct: np.ndarray | None = None,
           split: str | None = None) -> Verdict:
    """The gate. `challenger`/`champion` are classification_metrics of the SAME evaluation rows;
    `challenger_correct`/`champion_correct` say per row (same order) whether each model is right,
    and are required when there is a champion. `split` describes those rows in words.

    Promotes iff accuracy >= floor, and (no champion, or McNemar's one-sided p < 1 - confidence
    and the interval's lower end > min_improvement), and no class's recall fell by more than
    max_recall_drop against the champion.
    """
    accuracy = float(challenger["accuracy"])
    ok = bool(accuracy >= policy.floor)
    floor_reason = (f"accuracy {accuracy:.4f} clears the floor {policy.floor:.4f}" if ok
                    else f"accuracy {accuracy:.4f} is below the floor {policy.floor:.4f}")
    on = f" on the {split}" if split else ""
    if champion is None:
        return Verdict(promote=ok, reasons=[floor_reason + on, "no champion yet: the floor alone decides"],
                       challenger_version=challenger_version, challenger_accuracy=accuracy, split=split)
    if challenger_correct is None or champion_correct is None:
        raise ValueError("comparing with a champion needs both models' per-row correctness on the same rows")
    test = paired_comparison(challenger_correct, champion_correct, policy.confidence)
    for role, scored in (("challenger", challenger), ("champion", champion)):
        if scored.get("rows") not in (None, test["rows"]):
            raise ValueError(f"the {role}'s metrics cover {scored['rows']} rows, its per-row correctness {test['rows']}")
    figures = (f"{accuracy:.4f} vs champion v{champion_version} {champion['accuracy']:.4f} "
               f"({test['difference']:+.4f}, {policy.confidence * 100:g} % CI {test['ci_low']:+.4f}..{test['ci_high']:+.4f}, "
               f"McNemar p = {_p(test['p_value'])}){on}")
    if test["p_value"] < 1.0 - policy.confidence and test["ci_low"] > policy.min_improvement:
        reasons = [figures]
    else:
        ok = False
        above = f" by more than {policy.min_improvement:+.4f}" if policy.min_improvement else ""
        reasons = [f"no evidence of improvement{above}: {figures}"]
    reasons.append(floor_reason)
    champion_recall = {row["class"]: row["recall"] for row in champion["per_class"] if row["support"]}
    drops = []
    for row in challenger["per_class"]:
        if row["class"] in champion_recall:
            drop = champion_recall[row["class"]] - row["recall"]
            if drop > policy.max_recall_drop:
                drops.append((drop, row["class"], champion_recall[row["class"]], row["recall"]))
    if drops:
        ok = False
        drops.sort(reverse=True)
        shown = ", ".join(f"{c} {old:.4f} -> {new:.4f}" for _, c, old, new in drops[:5])
        reasons.append(f"recall fell by more than {policy.max_recall_drop:.4f} for {len(drops)} class(es): {shown}")
    else:
        reasons.append(f"no class's recall fell by more than {policy.max_recall_drop:.4f}")
    return Verdict(promote=ok, reasons=reasons, challenger_version=challenger_version, challenger_accuracy=accuracy,
                   champion_version=champion_version, champion_accuracy=float(champion["accuracy"]), split=split, **test)


# --------------------------------------------------------------------------- aliases and audit


def current_version(client, name: str, alias: str) -> str | None:
    """The version number `alias` points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def actor() -> str:
    """Who is moving an alias: KEEL_ACTOR, else user@host."""
    try:
        user = getpass.getuser()
    except Exception:  # no user database in some containers
        user = "unknown"
    return os.environ.get("KEEL_ACTOR") or f"{user}@{socket.gethostname()}"


@contextmanager
def alias_lock(client, name: str, timeout: float = 60.0, stale_after: float = 120.0):
    """A registry-wide mutex for `name`'s aliases.

    Creating a registered model is atomic in every MLflow store (unique name), so the marker
    model `<name>.keel-alias-lock` is the lock; a holder that died is broken after `stale_after`
    (by exactly one waiter: _break_stale).
    """
    lock_name = name + LOCK_SUFFIX
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    while not _try_lock(client, lock_name, token, stale_after):
        if time.monotonic() > deadline:
            raise PromotionError(f"alias lock {lock_name} is held; another promotion is running (or delete it if stale)")
        time.sleep(0.05)
    try:
        yield
    finally:
        if _lock_token(client, lock_name) == token:  # not if it was broken as stale meanwhile
            _delete_quietly(client, lock_name)


def _create_marker(client, marker: str, token: str, description: str) -> bool:
    """Creates the marker model `marker` holding `token`; False when it exists already."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(marker, tags={"keel.lock": token, "keel.lock.since": str(time.time())},
                                       description=description)
        return True
    except MlflowException:
        return False


def _lock_tags(client, marker: str) -> dict[str, str] | None:
    """The tags of marker model `marker`, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(marker).tags)
    except MlflowException:
        return None


def _lock_token(client, marker: str) -> str | None:
    tags = _lock_tags(client, marker)
    return None if tags is None else tags.get("keel.lock", "")


def _delete_quietly(client, marker: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(marker)
    except MlflowException:
        pass  # gone already


def _try_lock(client, lock_name: str, token: str, stale_after: float) -> bool:
    """One attempt at the lock: take it, or (when it is gone or its holder is stale) clear the
    way and take it then. False: someone else holds it."""
    description = f"lock for alias moves of {lock_name.removesuffix(LOCK_SUFFIX)}; safe to delete if stale"
    if _create_marker(client, lock_name, token, description):
        return True
    held = _lock_tags(client, lock_name)
    if held is not None:
        if time.time() - float(held.get("keel.lock.since", "0")) <= stale_after:
            return False
        if not _break_stale(client, lock_name, held.get("keel.lock", "")):
            return False
    return _create_marker(client, lock_name, token, description)


def _break_stale(client, lock_name: str, stale_token: str) -> bool:
    """Deletes the lock of the stale holder `stale_token`, if it is still that one's.

    Of the waiters that found the same holder stale, only the one that creates the breaker
    marker named after that holder breaks the lock; a waiter that comes late (paused after
    reading the stale lock) creates the marker after the breaker removed it, and then finds
    the lock someone took since, which it leaves alone. False: another waiter is breaking it."""
    breaker = f"{lock_name}.break-{stale_token}"
    if not _create_marker(client, breaker, uuid.uuid4().hex, f"breaking the stale {lock_name}; safe to delete"):
        return False
    try:
        if _lock_token(client, lock_name) == stale_token:
            _delete_quietly(client, lock_name)
        return True
    finally:
        _delete_quietly(client, breaker)


def record(client, name: str, event: dict) -> dict:
    """Appends an alias event to the model's audit trail (tags in the tracking store)."""
    now = dt.datetime.now(dt.timezone.utc)
    event = redact_data({"time": now.isoformat(), "actor": actor(), **event})  # `why` is free text
    key = f"{AUDIT_PREFIX}{now.strftime('%Y%m%dT%H%M%S.%f')}-{uuid.uuid4().hex[:6]}"
    client.set_registered_model_tag(name, key, json.dumps(event, sort_keys=True))
    return event


def history(client, name: str) -> list[dict]:
    """The audit trail of `name`, oldest first."""
    tags = client.get_registered_model(name).tags
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))]


def when(event: dict) -> str:
    """An event's time as people read it: "2026-11-30 19:48:01 UTC"."""
    return event["time"][:19].replace("T", " ") + " UTC"


def one_line(text: str, limit: int = 200) -> str:
    """`text` on one line, cut at `limit` characters (a gate's reason is its whole verdict)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def keel_section(description: str | None, heading: str, lines: list[str]) -> str:
    """`description` with its section under `heading` replaced by `lines`; the text above it (Keel's
    summary, or what someone wrote in the UI) stays. The newest lines that fit MLflow's limit are kept."""
    head = (description or "").split(heading, 1)[0].rstrip()
    room, shown = DESCRIPTION_LIMIT - len(head) - len(heading) - 80, len(lines)
    while shown and sum(len(line) + 1 for line in lines[len(lines) - shown:]) > room:
        shown -= 1
    kept = ([f"- ({len(lines) - shown} earlier lines: `keel models`)"] if shown < len(lines) else []) + lines[len(lines) - shown:]
    return "\n\n".join(part for part in (head, heading, "\n".join(kept)) if part)


def describe_history(client, name: str) -> None:
    """Rewrites the alias history in `name`'s description from all its audit tags, one line per
    move: a rewrite that a concurrent move overtook is repaired by the next move."""
    lines = [f"- {when(e)}: `{e['alias']}` v{e.get('from') or '-'} -> v{e['to']} ({e['kind']} by {e['actor']}: "
             f"{one_line(e['reason'])})" for e in history(client, name)]
    client.update_registered_model(name, description=keel_section(
        client.get_registered_model(name).description, HISTORY_HEADING, lines))


def move_alias(client, name: str, alias: str, version: str, expected: str | None, kind: str, reason: str) -> dict:
    """Points `alias` at `version` only if it still points at `expected`; records the move."""
    with alias_lock(client, name):
        current = current_version(client, name, alias)
        if current != expected:
            raise AliasConflict(f"{name}@{alias} moved to v{current} (expected v{expected}); decide again")
        client.set_registered_model_alias(name, alias, version)
        event = record(client, name, {"alias": alias, "from": current, "to": str(version), "kind": kind, "reason": reason})
        try:
            describe_history(client, name)
        except Exception as exc:  # the move is made and recorded; the description is only its view
            logging.getLogger(__name__).warning(f"{name}'s description misses this alias move ({exc}); the next rewrites it")
        return event


def rollback(client, name: str, reason: str = "rollback") -> dict:
    """Makes the champion before the current one champion again."""
    current = current_version(client, name, CHAMPION)
    if current is None:
        raise PromotionError(f"{name} has no champion to roll back")
    # The move that made the current champion (rollbacks aside) says who was champion before.
    moves = [e for e in history(client, name)
             if e["alias"] == CHAMPION and e["to"] == current and e.get("from") and e["kind"] != "rollback"]
    if not moves:
        raise PromotionError(f"{name}@champion (v{current}) has no earlier champion in its history")
    previous = moves[-1]["from"]
    return move_alias(client, name, CHAMPION, previous, current, "rollback", reason)

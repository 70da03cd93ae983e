"""Champion/challenger promotion: the gate, the alias audit trail, safe alias moves, rollback.

MLflow keeps no history of which version held an alias. Keel appends every alias move to the
registered model's tags in the tracking store (`keel.audit.<time>-<nonce>` = JSON event), so
the history lives wherever the registry lives and any client can read it.

Alias moves are compare-and-set: under a registry-wide lock (a marker registered model whose
creation the store makes atomic), the alias's current version is re-read and the move is
refused if it is not the one the caller decided against.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from keel.errors import KeelError

CHALLENGER = "challenger"
CHAMPION = "champion"
AUDIT_PREFIX = "keel.audit."
LOCK_SUFFIX = ".keel-alias-lock"


class PromotionPolicy(BaseModel):
    """When a challenger may become champion."""

    model_config = ConfigDict(extra="forbid")

    floor: float = Field(default=0.9, ge=0.0, le=1.0, description="minimum evaluation accuracy")
    margin: float = Field(default=0.001, ge=0.0, le=1.0, description="accuracy gain over the champion required")
    max_recall_drop: float = Field(default=0.02, ge=0.0, le=1.0,
                                   description="largest allowed fall of any class's recall against the champion")


class PromotionError(KeelError):
    """An alias move that cannot be done (unknown version, nothing to roll back to, ...)."""


class AliasConflict(PromotionError):
    """The alias moved between the decision and the write."""


@dataclass
class Verdict:
    """A gate decision with its reasons in words and figures."""

    promote: bool
    reasons: list[str]
    challenger_version: str
    challenger_accuracy: float
    champion_version: str | None = None
    champion_accuracy: float | None = None
    evaluation_ids_sha256: str | None = None
    details: dict = field(default_factory=dict)

    def text(self) -> str:
        head = "promoted" if self.promote else "not promoted"
        return f"{head}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(challenger: dict, champion: dict | None, policy: PromotionPolicy,
           challenger_version: str, champion_version: str | None) -> Verdict:
    """The gate: `challenger`/`champion` are classification_metrics of the SAME evaluation rows."""
    accuracy = challenger["accuracy"]
    reasons: list[str] = []
    ok = True
    if accuracy < policy.floor:
        ok = False
        reasons.append(f"accuracy {accuracy:.4f} is below the floor {policy.floor:.4f}")
    else:
        reasons.append(f"accuracy {accuracy:.4f} clears the floor {policy.floor:.4f}")
    if champion is None:
        reasons.append("no champion yet: the floor alone decides")
        return Verdict(ok, reasons, challenger_version, accuracy)

    gain = accuracy - champion["accuracy"]
    if gain < policy.margin:
        ok = False
        reasons.append(f"accuracy {accuracy:.4f} vs champion v{champion_version} {champion['accuracy']:.4f} "
                       f"({gain:+.4f}, needs +{policy.margin:.4f})")
    else:
        reasons.append(f"accuracy {accuracy:.4f} beats champion v{champion_version} {champion['accuracy']:.4f} "
                       f"by {gain:+.4f} (needs +{policy.margin:.4f})")
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
    return Verdict(ok, reasons, challenger_version, accuracy, champion_version, champion["accuracy"])


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
    model `<name>.keel-alias-lock` is the lock; a holder that died is broken after `stale_after`.
    """
    from mlflow.exceptions import MlflowException

    lock_name = name + LOCK_SUFFIX
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_registered_model(lock_name, tags={"keel.lock": token, "keel.lock.since": str(time.time())},
                                           description=f"lock for alias moves of {name}; safe to delete if stale")
            break
        except MlflowException:
            try:
                held = client.get_registered_model(lock_name)
                since = float(held.tags.get("keel.lock.since", "0"))
                if time.time() - since > stale_after:
                    client.delete_registered_model(lock_name)
                    continue
            except MlflowException:
                continue  # released meanwhile
            if time.monotonic() > deadline:
                raise PromotionError(f"alias lock {lock_name} is held; another promotion is running (or delete it if stale)")
            time.sleep(0.05)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock_name)
        except MlflowException:
            pass


def record(client, name: str, event: dict) -> dict:
    """Appends an alias event to the model's audit trail (tags in the tracking store)."""
    now = dt.datetime.now(dt.timezone.utc)
    event = {"time": now.isoformat(), "actor": actor(), **event}
    key = f"{AUDIT_PREFIX}{now.strftime('%Y%m%dT%H%M%S.%f')}-{uuid.uuid4().hex[:6]}"
    client.set_registered_model_tag(name, key, json.dumps(event, sort_keys=True))
    return event


def history(client, name: str) -> list[dict]:
    """The audit trail of `name`, oldest first."""
    tags = client.get_registered_model(name).tags
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))]


def move_alias(client, name: str, alias: str, version: str, expected: str | None, kind: str, reason: str) -> dict:
    """Points `alias` at `version` only if it still points at `expected`; records the move."""
    with alias_lock(client, name):
        current = current_version(client, name, alias)
        if current != expected:
            raise AliasConflict(f"{name}@{alias} moved to v{current} (expected v{expected}); decide again")
        client.set_registered_model_alias(name, alias, version)
        return record(client, name, {"alias": alias, "from": current, "to": str(version), "kind": kind, "reason": reason})


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

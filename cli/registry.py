"""`keel models`, `keel promote`, `keel rollback` and `keel sign`: the model registry, by hand."""

from __future__ import annotations

import argparse
import time

from keel.core.errors import KeelError
from keel.tracking import client as tracking
from keel.tracking.promotion import history


def models(args: argparse.Namespace) -> int:
    client = tracking.client()
    try:
        versions = client.search_model_versions(f"name='{args.name}'")
    except Exception as exc:
        raise KeelError(f"cannot list {args.name}: {exc}") from None
    if not versions:
        raise KeelError(f"no registered model {args.name}; `keel train` registers one")
    aliases: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(args.name).aliases.items():
        aliases.setdefault(str(number), []).append(alias)
    print(f"{'version':>7}  {'created (UTC)':19}  {'accuracy':>8}  {'macro-F1':>8}  {'split (evaluation rows)':24}  "
          f"{'dataset version':16}  aliases / verdict")
    for mv in sorted(versions, key=lambda v: int(v.version)):
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(mv.creation_timestamp / 1000))
        tags = mv.tags
        split = f"{tags.get('split.kind', 'random')} ({tags.get('split.evaluation_rows', '?')})"
        print(f"{mv.version:>7}  {created:19}  {tags.get('evaluation_accuracy', '')[:8]:>8}  "
              f"{tags.get('evaluation_macro_f1', '')[:8]:>8}  {split:24}  {tags.get('dataset_version', ''):16}  "
              f"{', '.join(sorted(aliases.get(str(mv.version), []))) or '-'}  {_verdict(tags)}")
    print("\nalias history (oldest first):")
    for event in history(client, args.name):
        print(f"  {event['time'][:19]}  {event['alias']:10}  v{event.get('from') or '-'} -> v{event['to']}  "
              f"[{event['kind']}] by {event['actor']}: {event['reason']}")
    return 0


def _verdict(tags: dict[str, str]) -> str:
    """The gate's verdict, then any override and rollback of the version (tags of their own)."""
    return "; ".join(tags[key] for key in ("keel.verdict", "keel.override", "keel.rolled_back") if tags.get(key))


def promote(args: argparse.Namespace) -> int:
    client = tracking.client()
    try:
        client.get_model_version(args.name, args.version)
    except Exception:
        raise KeelError(f"{args.name} has no version {args.version}; see `keel models {args.name}`") from None
    from keel.tracking.registry import override_champion  # imports mlflow: not at start-up

    event = override_champion(client, args.name, args.version, args.reason)
    print(f"{args.name}@champion: v{event['from'] or '-'} -> v{event['to']} (override by {event['actor']}: {args.reason})")
    return 0


def sign(args: argparse.Namespace) -> int:
    from keel.tracking.trust import sign_version  # model-signing and its crypto: seconds to import

    signer = sign_version(tracking.client(), args.name, args.version)
    print(f"{args.name} version {args.version}: every file checked against its manifest; signed with team key {signer}")
    return 0


def roll_back(args: argparse.Namespace) -> int:
    from keel.tracking.registry import roll_back_champion  # imports mlflow: not at start-up

    event = roll_back_champion(tracking.client(), args.name, args.reason)
    print(f"{args.name}@champion: v{event['from']} -> v{event['to']} (rollback by {event['actor']}: {args.reason})")
    return 0

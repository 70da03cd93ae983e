"""The `keel` command: parse (cli.parser), run the command, turn its outcome into an exit code.

Exit codes: 0 done; 1 the data failed validation (or a batch had problems), or an unexpected
error (a bug, an outage: its traceback is printed, credentials masked); 2 a user's mistake
(a usage error, a KeelError: one sentence); 128 + the signal's number when SIGTERM (143) or
Ctrl-C (130) stopped it (cli.signals).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback

from cli import commands, registry
from cli.parser import build_parser
from cli.signals import exit_code, stop_on_signals, stop_signal
from cli.stack import stack
from cli.pretrain import pretrain
from cli.train import train
from cli.ui import ui
from flows.prefect_api import flush_prefect_workers, keel_logs_to_prefect
from keel.core.errors import DataValidationError, KeelError
from keel.core.secrets import install_log_redaction, redact

COMMANDS = {"train": train, "pretrain": pretrain, "predict": commands.predict, "validate": commands.validate, "profile": commands.profile,
            "watch": commands.watch, "models": registry.models, "promote": registry.promote,
            "rollback": registry.roll_back, "sign": registry.sign, "stack": stack, "ui": ui}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["validate", "profile"]:
        argv = ["profile", *argv[2:]]
    args = build_parser().parse_args(argv)
    # Credentials in URLs and secret environment variables never reach a log line or message.
    install_log_redaction()
    show_progress()
    try:
        return COMMANDS[args.command](args)
    except DataValidationError as exc:
        print(f"\n{redact(exc)}", file=sys.stderr)
        return 1
    except KeelError as exc:
        print(f"\nkeel {args.command}: {redact(exc)}", file=sys.stderr)
        return 2
    except BaseException as exc:
        signum = stop_signal(exc)
        if signum is not None:  # whatever a stop raised on its way out (cli.signals)
            print(f"\nkeel {args.command}: stopped by {signal.Signals(signum).name}"
                  + ("; the last finished epoch's checkpoint is kept: the same command resumes from it"
                     if args.command in ("train", "pretrain") else ""), file=sys.stderr)
            return exit_code(signum)
        if not isinstance(exc, Exception):
            raise
        # Not a user's mistake: a bug or an outage. The traceback helps, the credentials in it do not.
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        return 1


class ProgressLines(logging.Handler):
    """Prints the library's progress records (INFO of the "keel" loggers: one line per training
    epoch, a line every few seconds of a long scoring or validation pass) plainly on stdout,
    a terminal or not: a log file, CI or `make run | tee` gets them as they come. Warnings and
    errors go their usual way: Prefect's console handler on stderr, or, before Prefect is
    imported, logging's last resort (which this handler's presence would otherwise silence)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            if not logging.getLogger().handlers and logging.lastResort is not None:
                logging.lastResort.handle(record)
            return
        # sys.stdout as it is now, not when the handler was made (tests redirect it); written,
        # not printed: a flow with log_prints turns print() into one more Prefect log record.
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def show_progress() -> None:
    """The "keel" loggers' INFO records printed on stdout (ProgressLines) and, in a flow run,
    sent to its logs on the Prefect API (flows.prefect_api.keel_logs_to_prefect). Idempotent:
    tests call `main` many times in one process."""
    keel = logging.getLogger("keel")
    if keel.getEffectiveLevel() > logging.INFO:
        keel.setLevel(logging.INFO)
    if not any(isinstance(handler, ProgressLines) for handler in keel.handlers):
        keel.addHandler(ProgressLines())
    keel_logs_to_prefect()


def entry() -> None:
    """The `keel` console script: `main`, then a prompt exit.

    Everything is written and flushed when `main` returns (outputs are atomic, MLflow calls
    are synchronous, Prefect's logs and events are drained). Python's own teardown of torch,
    CUDA libraries and friends then takes seconds for nothing (docs/benchmarks.md), so skip it.
    """
    stop_on_signals()
    code = main()
    flush_prefect_workers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()

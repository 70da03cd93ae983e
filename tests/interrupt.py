"""A training killed after an epoch's checkpoint, as a SIGKILL would kill it: the resume tests'
`on_epoch_end` callback."""

from __future__ import annotations


class Killed(Exception):
    pass


def kill_after(epoch_to_kill: int):
    """An `on_epoch_end` callback that raises Killed once epoch `epoch_to_kill` has been checkpointed."""
    def callback(epoch, metrics, model):
        if epoch == epoch_to_kill:
            raise Killed  # after the epoch's checkpoint was written, as a SIGKILL would be
    return callback

"""Data-parallel training: `keel train --nproc N` runs the one training loop in N processes.

Launch. `launch` starts the N processes with torch.multiprocessing's spawn (fresh
interpreters: CUDA cannot be forked) and joins them with a file-based rendezvous
(init_method file://, in a private temporary folder), gloo on the CPU, NCCL on GPUs (rank r
on cuda:r). Not torchrun's elastic launcher (torch.distributed.launcher.api.elastic_launch):
it replaces the calling process's SIGTERM and SIGINT handlers while it runs, which would take
`keel train`'s own stop (cli/signals.py: the run marked KILLED, its checkpoint kept) away;
its restarts and elastic membership are what the training task's retries and the checkpoint
already do on one machine; and a rank's error reaches the caller as text, where Keel needs
the KeelError itself (one sentence, exit 2). Here the first error any rank raises is raised
again in the caller, the other ranks are stopped, and a stop of the caller (SIGTERM, Ctrl-C)
stops the ranks; a rank dies with its parent (PR_SET_PDEATHSIG).

Shards. The loop's generator is seeded alike on every rank, so every rank draws the same
permutation and the same batches as one process would; rank r trains on the r-th of N
near-equal slices of each batch (keel.data.batches.RankShard). The global batch stays
`batch_size` (each rank takes batch_size / N rows), so an epoch has as many optimizer steps as
in one process, the one-cycle schedule is the same, and the gradient DistributedDataParallel
averages is the single process's up to float rounding and batch-norm statistics (computed per
rank). Augmentation and dropout draw from per-rank generators seeded from the shared one each
epoch. Validation rows are split between the ranks and the sums reduced; every decision
(metrics, time budget, early stopping) is made from values reduced and broadcast from rank
0, so all ranks decide alike and no rank waits in a collective another one left.

Rank 0 alone reads and writes the checkpoint (the others get its contents by broadcast) and
calls `on_epoch_end` (logging to MLflow); the checkpoint holds the unwrapped module's state
and the shared generator's, so a run resumes with any number of processes.

torch is imported inside the functions: the `keel` command imports this module at start to
refuse an unfit --nproc before anything runs.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing.util
import os
import pickle
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.config import BACKBONES, TEXT_MODELS, TrainConfig
from keel.core.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

PIXEL_FORMATS = ("csv", "idx", "parquet")  # the pixel-table modality's dataset formats
STOP_GRACE_SECONDS = 10.0  # a stopped rank's time to end on its own before SIGKILL


@dataclass(frozen=True)
class Ranks:
    """This process's place in data-parallel training: rank 0 of 1 outside it."""

    rank: int = 0
    world: int = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def ranks() -> Ranks:
    """The rank and world size of the process group this process is in (launch makes one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def only_pixel_tables(nproc: int) -> ConfigError:
    return ConfigError(f"--nproc {nproc}: data-parallel training trains the pixel networks (cnn, mlp, cnn-wide) on "
                       "pixel tables only; train image folders, transfer and text models with --nproc 1")


def refuse_unsupported(nproc: int, config: TrainConfig, dataset_format: str) -> None:
    """A ConfigError when `nproc` processes cannot train `config` on a dataset of `dataset_format`."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give at least 1 process")
    if nproc == 1:
        return
    if dataset_format not in PIXEL_FORMATS or config.model in BACKBONES + TEXT_MODELS or config.backbone:
        raise only_pixel_tables(nproc)
    if config.batch_size < nproc:
        raise ConfigError(f"--batch-size {config.batch_size} is smaller than --nproc {nproc}: each process trains on "
                          f"its share of every batch; use a batch size of at least {nproc}")


def threads_per_rank(nproc: int) -> int:
    """Intra-op threads per process: the cores shared out (OMP_NUM_THREADS when set), at least 1,
    so N processes do not each start a thread per core and fight for them."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else max(1, (os.cpu_count() or 1) // nproc)


def launch(nproc: int, device: torch.device, fn: Callable[..., Any], *args) -> Any:
    """Runs `fn(rank_device, *args)` in `nproc` processes joined in one process group and returns
    rank 0's value. `fn` and `args` must pickle (a module-level function, plain values)."""
    import torch
    import torch.multiprocessing as mp

    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc {nproc} asks for {nproc} GPUs but {torch.cuda.device_count()} "
                          f"{'is' if torch.cuda.device_count() == 1 else 'are'} visible; use --nproc "
                          f"{torch.cuda.device_count()} or fewer")
    backend = "nccl" if device.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory(prefix="keel-ddp-") as exchange:
        context = mp.start_processes(_rank_main, args=(nproc, backend, device.type, threads_per_rank(nproc), exchange,
                                                       os.getpid(), fn, args),
                                     nprocs=nproc, join=False, start_method="spawn")
        try:
            while not context.join(grace_period=STOP_GRACE_SECONDS):
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            raise _first_error(Path(exchange), exc) from exc
        finally:
            _stop(context.processes)
        result = Path(exchange) / "result.pt"
        if not result.exists():  # every rank ended as asked (a SIGINT to the ranks alone ends them quietly)
            raise RuntimeError(f"the {nproc} training processes were stopped before rank 0 finished; run again to "
                               "resume from the last epoch's checkpoint")
        return torch.load(result, map_location="cpu", weights_only=False)


def _stop(processes) -> None:
    """Ends the ranks still running (the caller was stopped): SIGTERM, then SIGKILL after a grace."""
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in alive:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def _first_error(exchange: Path, failure: Exception) -> BaseException:
    """The first exception any rank raised (the others' are its echoes: a collective that lost a
    peer), as itself when it pickles; else the launcher's report with the rank's traceback."""
    recorded = []
    for path in exchange.glob("rank*.error"):
        try:
            recorded.append(pickle.loads(path.read_bytes()))
        except Exception:  # noqa: BLE001  (an exception that does not unpickle: the traceback text tells)
            continue
    return min(recorded, key=lambda r: r[0])[1] if recorded else failure


def _interrupt(signum, frame) -> None:
    # A rank told to stop unwinds (an atomic write in progress removes its temporary) and ends
    # with the shell's code for the signal, which the launcher reports as a stop, not a success.
    raise SystemExit(128 + signum)


def _die_with_parent(parent: int) -> None:
    """SIGKILL this rank when the launching process dies (a kill -9 of `keel train`), where Linux allows it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the call
        os._exit(1)


def _print_progress() -> None:
    keel = logging.getLogger("keel")
    keel.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    keel.addHandler(handler)


def _rank_main(rank: int, world: int, backend: str, device_type: str, threads: int, exchange: str, parent: int,
               fn: Callable[..., Any], args: tuple) -> None:
    """One rank: joins the process group, runs `fn`, leaves rank 0's value (or its error) in `exchange`."""
    import torch
    import torch.distributed as dist

    _die_with_parent(parent)
    signal.signal(signal.SIGTERM, _interrupt)
    torch.set_num_threads(threads)
    if rank == 0:  # a spawned process has no handlers: rank 0's epoch lines go to stdout
        _print_progress()
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, init_method=f"file://{exchange}/rendezvous", rank=rank, world_size=world,
                                **({"device_id": device} if device.type == "cuda" else {}))
        result = fn(device, *args)
        if rank == 0:
            torch.save(result, Path(exchange) / "result.pt")
    except Exception as exc:
        _record_error(Path(exchange) / f"rank{rank}.error", exc)
        raise
    except SystemExit as stop:  # told to stop (_interrupt), and unwound
        _end(stop.code if isinstance(stop.code, int) else 1)
    dist.destroy_process_group()
    _end(0)


def _end(code: int) -> None:
    """Ends the rank now: what it writes is written, and the interpreter's teardown takes
    seconds with torch loaded. Multiprocessing's own exit clean-up runs first (what a child runs
    as it ends: it releases the semaphores tqdm's lock made, which would be reported leaked)."""
    multiprocessing.util._exit_function()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _record_error(path: Path, exc: Exception) -> None:
    try:
        path.write_bytes(pickle.dumps((time.time(), exc)))
    except Exception:  # noqa: BLE001  (does not pickle: the launcher reports the rank's traceback instead)
        pass


def from_leader(value: Any) -> Any:
    """Rank 0's `value` on every rank (as it is outside data-parallel training)."""
    import torch.distributed as dist

    if ranks().world == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def agreed(values: list[float], op: str = "sum") -> list[float]:
    """`values` summed ("sum") or maximised ("max") over the ranks, identical on every rank
    (broadcast from rank 0 after the reduction); as they are outside data-parallel training."""
    import torch
    import torch.distributed as dist

    if ranks().world == 1:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel (its gradients averaged over the ranks) in a process
    group; `model` itself outside one."""
    from torch.nn.parallel import DistributedDataParallel

    if ranks().world == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics, updated per rank by each step's local
    batch) on every rank: validation and the checkpoint then see one model."""
    import torch.distributed as dist

    if ranks().world == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def shard(source, ranking: Ranks):
    """Rank `ranking.rank`'s share of a batch source (the source itself for one process)."""
    if ranking.world == 1:
        return source
    if not hasattr(source, "shard"):
        raise only_pixel_tables(ranking.world)
    return source.shard(ranking.rank, ranking.world)

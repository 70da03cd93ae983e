"""Where and in what precision a network runs, and batched inference: shared by training,
evaluation and serving."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

from keel.core.errors import ConfigError
from keel.data.batches import to_float


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when asked for or available, else the CPU; asking for CUDA without a GPU is a ConfigError."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512-BF16 or AMX), where autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def select_precision(preference: str, device: torch.device) -> str:
    """'bf16' or 'fp32': bf16 on GPUs that support it and on CPUs with bf16 instructions."""
    if preference != "auto":
        return preference
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` on `device` (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (for timing it); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Images per forward pass on the CPU, whatever batch the caller asks for: a batch's activations
# then stay in the cores' caches. On 2 AVX2 EPYC cores (1 MiB L2 each) the Sign-MNIST CNN scored
# 27,455 rows in 3.3 s in batches of 256 against 6-10 s in batches of 1,024 (docs/benchmarks.md).
CPU_IMAGE_BATCH = 256

# Token ids per scoring batch: a batch of long texts holds fewer rows (attention grows with length).
TOKENS_PER_BATCH = 32768


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, device: torch.device, precision: str,
                   batch_size: int = 1024) -> torch.Tensor:
    """Float32 logits, in input order, computed in batches without gradients: of uint8 images
    N x C x H x W (as float in [0, 1]), or of int64 token ids N x L padded on the right
    (scored in length order, each batch cut to its longest text by the model)."""
    model.eval()
    if inputs.dtype == torch.uint8:
        batch_size = min(batch_size, CPU_IMAGE_BATCH) if device.type == "cpu" else batch_size
        batches = (slice(start, start + batch_size) for start in range(0, len(inputs), batch_size))
        return _scored(model, inputs, batches, device, precision, to_float)
    lengths = (inputs != getattr(model, "pad_id", 0)).sum(1).cpu()
    order = torch.argsort(lengths, stable=True)
    logits = _scored(model, inputs, _length_batches(lengths[order], order, batch_size), device, precision, None)
    out = torch.empty_like(logits)
    out[order.to(logits.device)] = logits
    return out


def _length_batches(sorted_lengths: torch.Tensor, order: torch.Tensor, batch_size: int):
    """Row indices of batches in length order, each of at most TOKENS_PER_BATCH tokens (padded)."""
    start = 0
    while start < len(order):
        end = min(len(order), start + batch_size)
        end = min(end, start + max(1, TOKENS_PER_BATCH // max(1, int(sorted_lengths[end - 1]))))
        yield order[start:end]
        start = end


def _scored(model: nn.Module, inputs: torch.Tensor, batches, device: torch.device, precision: str, prepare) -> torch.Tensor:
    out = []
    for rows in batches:
        batch = inputs[rows].to(device, non_blocking=True)
        with autocast(device, precision):
            out.append(model(prepare(batch) if prepare else batch).float())
    return torch.cat(out) if out else torch.empty(0)


def set_threads() -> None:
    """Uses every core for intra-op work unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)

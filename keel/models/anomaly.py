"""Anomaly scores from an autoencoder trained on the reference data (the course's method).

An autoencoder trained on normal images reconstructs them well; a high reconstruction error
(mean squared error per pixel, intensities scaled to 0-1) marks an image unlike the
reference. The threshold is chosen on reference images the autoencoder never trained on.

A plain autoencoder also reconstructs an *inverted* hand image almost as well as a normal
one (measured: fewer than a quarter of inverted Sign-MNIST images score above the reference's
99.9th percentile), because inversion keeps every edge. So training adds outlier exposure:
inverted copies of the training images must reconstruct with an error of at least
`outlier_margin`. Noise, blank frames and MNIST digits are never shown to it; the profile
measures how well they are caught.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from keel.core.atomic import atomic_path
from keel.core.errors import ConfigError
from keel.data.batches import shuffled_batches


@dataclass
class AutoencoderConfig:
    n_pixels: int
    hidden: int = 256
    latent: int = 16
    epochs: int = 5
    batch_size: int = 256
    learning_rate: float = 3e-3
    outlier_margin: float = 0.05
    outlier_weight: float = 0.5
    seed: int = 0


class Autoencoder(nn.Module):
    """A dense autoencoder: pixels (0-1) -> hidden -> latent -> hidden -> pixels."""

    def __init__(self, n_pixels: int, hidden: int = 256, latent: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_pixels, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, n_pixels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@dataclass
class TrainedAutoencoder:
    model: Autoencoder
    config: AutoencoderConfig
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _scaled(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).reshape(len(pixels), -1) / 255.0


def train_autoencoder(pixels: np.ndarray, config: AutoencoderConfig) -> TrainedAutoencoder:
    """An autoencoder fitted to `pixels` (N x P, 0-255) with inverted copies as outliers."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    data = _scaled(pixels)
    model = Autoencoder(config.n_pixels, config.hidden, config.latent)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    history = []
    for epoch in range(1, config.epochs + 1):
        total, outlier_total, batches = 0.0, 0.0, 0
        for idx in shuffled_batches(len(data), config.batch_size, generator):
            batch = data[idx]
            outliers = 1.0 - batch[: max(1, len(batch) // 4)]
            normal_error = ((model(batch) - batch) ** 2).mean()
            outlier_error = ((model(outliers) - outliers) ** 2).mean(dim=1)
            loss = normal_error + config.outlier_weight * torch.relu(config.outlier_margin - outlier_error).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(normal_error.detach())
            outlier_total += float(outlier_error.detach().mean())
            batches += 1
        history.append({"epoch": epoch, "reconstruction_error": total / max(batches, 1),
                        "inverted_reconstruction_error": outlier_total / max(batches, 1)})
    model.eval()
    return TrainedAutoencoder(model, config, history, time.perf_counter() - started)


def reconstruction_errors(model: Autoencoder, pixels: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Mean squared reconstruction error per image (intensities 0-1); NaN pixels count as 0."""
    if not len(pixels):
        return np.zeros(0, dtype=np.float32)
    out = np.empty(len(pixels), dtype=np.float32)
    for start in range(0, len(pixels), batch_size):
        out[start:start + batch_size] = _block_errors(model, np.array(pixels[start:start + batch_size], dtype=np.float32))
    return out


def _block_errors(model: Autoencoder, block: np.ndarray) -> np.ndarray:
    """reconstruction_errors of one block of rows (float32, N x P), worked in place: the same
    operations and figures as on copies, but a block of 8,192 Sign-MNIST rows costs ~80 MB
    instead of ~180 MB, which streaming validation's peak feels."""
    np.nan_to_num(np.clip(block, 0, 255, out=block), copy=False)
    with torch.inference_mode():
        x = torch.from_numpy(block).reshape(len(block), -1).div_(255.0)
        return model(x).sub_(x).pow_(2).mean(dim=1).numpy()


class StreamingErrors:
    """reconstruction_errors of rows that come a chunk at a time, scored in blocks of
    `batch_size` rows across chunk boundaries: the blocks one call on all the rows would score,
    so the scores are the same to the bit, whatever the chunks' sizes. Rows wait in one block
    buffer (float32, as reconstruction_errors converts them), scored in place when it is full."""

    def __init__(self, model: Autoencoder, batch_size: int = 8192):
        self.model, self.batch_size = model, batch_size
        self.block: np.ndarray | None = None
        self.count = 0
        self.scores: list[np.ndarray] = []

    def add(self, pixels: np.ndarray) -> None:
        pixels = np.asarray(pixels)
        pixels = pixels if pixels.ndim == 2 else pixels.reshape(len(pixels), -1)
        start = 0
        while start < len(pixels):
            if self.block is None:
                self.block = np.empty((self.batch_size, pixels.shape[1]), dtype=np.float32)
            taken = min(len(pixels) - start, self.batch_size - self.count)
            self.block[self.count:self.count + taken] = pixels[start:start + taken]
            self.count, start = self.count + taken, start + taken
            if self.count == self.batch_size:
                self._flush()

    def _flush(self) -> None:
        block, count = self.block, self.count
        self.block, self.count = None, 0
        self.scores.append(_block_errors(self.model, block[:count]))

    def finish(self) -> np.ndarray:
        """Every row's score, in the order added."""
        if self.count:
            self._flush()
        return np.concatenate(self.scores) if self.scores else np.zeros(0, dtype=np.float32)


def save_autoencoder(trained: TrainedAutoencoder, path: Path) -> str:
    """Writes the weights and their config atomically; returns the file's sha256."""
    buffer = io.BytesIO()
    torch.save({"config": trained.config.__dict__, "state_dict": trained.model.state_dict()}, buffer)
    data = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_autoencoder(path: Path, sha256: str | None = None) -> Autoencoder:
    """The autoencoder saved at `path`, checked against the sha256 the suite recorded."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: the suite's autoencoder weights are missing; run `keel validate profile` again") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ConfigError(f"{path}: sha256 differs from the one in the suite; the weights changed — re-run `keel validate profile`")
    saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    config = saved["config"]
    model = Autoencoder(config["n_pixels"], config["hidden"], config["latent"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()

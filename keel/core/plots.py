"""PNG figures: learning curves, confusion matrices and grids of sample images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keel.core.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(images: np.ndarray, path: Path, columns: int = 8, scale: int = 3, titles: list[str] | None = None) -> Path:
    """Saves float images N x C x H x W in [0, 1] as one PNG grid."""
    plt = _pyplot()
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * scale * 0.5, rows * scale * 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            image = np.transpose(images[i], (1, 2, 0))
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            if titles:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def learning_curves(history: list[dict], path: Path, phase_boundary: int | None = None) -> Path:
    """Loss and accuracy per epoch, training beside validation; a dashed line after the last
    epoch of phase 1 (frozen backbone) in transfer learning."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    acc_ax.plot(epochs, [h.get("train_accuracy", np.nan) for h in history], marker="o", label="train (augmented)")
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="validation")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        if phase_boundary:
            ax.axvline(phase_boundary + 0.5, color="grey", linestyle="--", label="phase 1 | phase 2 (fine-tuning)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def worst_classified_grid(images: np.ndarray, true_names: list[str], predicted_names: list[str],
                          confidences: list[float], path: Path, columns: int = 4) -> Path:
    """The given images (N, H, W, C uint8) with their true and predicted classes."""
    plt = _pyplot()
    n = max(1, len(images))
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, predicted, confidence in zip(axes.flat, images, true_names, predicted_names, confidences):
        ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        ax.set_title(f"true {true}\npredicted {predicted} ({confidence:.0%})", fontsize=8,
                     color="crimson" if true != predicted else "black")
    fig.suptitle("worst-classified evaluation images (lowest probability of the true class)")
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix_png(matrix: np.ndarray, class_names: list[str], path: Path, title: str = "confusion matrix") -> Path:
    """A heat map of counts, true classes down, predicted across."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    size = max(5, 0.35 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(np.log1p(matrix), cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i, j in zip(*np.nonzero(matrix)):
        ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6,
                color="white" if i == j else "crimson")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)

"""The baseline: a plain PyTorch loop written the course's way.

A Dataset that applies torchvision transforms to one image at a time, a DataLoader with
batch 32, Adam, float32 -- as in the Sign-Language-MNIST notebook of the deep-learning course.
Used by benchmarks/train_sign_mnist.py to compute Keel's speed as a ratio on the same machine.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as transforms


class MyConvBlock(nn.Module):
    def __init__(self, in_ch, out_ch, dropout_p):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=1, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
            nn.Dropout(dropout_p),
            nn.MaxPool2d(2, stride=2),
        )

    def forward(self, x):
        return self.model(x)


def course_model(n_classes: int) -> nn.Module:
    return nn.Sequential(
        MyConvBlock(1, 25, 0),
        MyConvBlock(25, 50, 0.2),
        MyConvBlock(50, 75, 0),
        nn.Flatten(),
        nn.Linear(75 * 3 * 3, 512),
        nn.Dropout(0.3),
        nn.ReLU(),
        nn.Linear(512, n_classes),
    )


random_transforms = transforms.Compose([
    transforms.RandomRotation(5),
    transforms.RandomResizedCrop((28, 28), scale=(0.9, 1), ratio=(1, 1)),
    transforms.ColorJitter(brightness=0.2, contrast=0.5),
])


class MyDataset(Dataset):
    def __init__(self, images: np.ndarray, targets: np.ndarray):
        self.xs = torch.tensor(images, dtype=torch.float32).div(255).reshape(-1, 1, 28, 28)
        self.ys = torch.tensor(targets)

    def __getitem__(self, idx):
        return random_transforms(self.xs[idx]), self.ys[idx]

    def __len__(self):
        return len(self.xs)


def run_course_loop(train_images: np.ndarray, train_targets: np.ndarray, eval_images: np.ndarray,
                    eval_targets: np.ndarray, n_classes: int, epochs: int, seed: int = 0) -> list[dict]:
    """Trains the course's way; one dict per epoch with seconds, images/s and eval accuracy."""
    torch.manual_seed(seed)
    model = course_model(n_classes)
    loader = DataLoader(MyDataset(train_images, train_targets), batch_size=32, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    eval_x = torch.tensor(eval_images, dtype=torch.float32).div(255).reshape(-1, 1, 28, 28)
    eval_y = torch.tensor(eval_targets)
    history = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.train()
        for x, y in loader:
            output = model(x)
            optimizer.zero_grad()
            loss = loss_fn(output, y)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            accuracy = (model(eval_x).argmax(1) == eval_y).float().mean().item()
        history.append({"epoch": epoch, "seconds": seconds, "images_per_second": len(train_targets) / seconds,
                        "eval_accuracy": accuracy})
    return history

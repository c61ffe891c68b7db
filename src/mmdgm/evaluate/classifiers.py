"""Digit classifiers used to score cross- and joint coherence (as in MMVAE's evaluation).

Both are LeNet-style: two conv + max-pool layers (dropout on the second), then two
linear layers with dropout between them.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm


class DigitClassifier(nn.Module):
    """conv5(c->10) pool relu, conv5(10->20) dropout pool relu, fc(->50) relu dropout, fc(->10)."""

    def __init__(self, shape: tuple[int, int, int], classes: int = 10) -> None:
        super().__init__()
        channels, height, width = shape
        self.shape = tuple(shape)
        self.conv1 = nn.Conv2d(channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.drop = nn.Dropout2d(0.5)
        features = 20 * ((height // 2 - 2) // 2 - 2) * ((width // 2 - 2) // 2 - 2)
        self.fc1 = nn.Linear(features, 50)
        self.fc2 = nn.Linear(50, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, classes) of float images (B, C, H, W) in [0, 1]."""
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.drop(self.conv2(x)), 2))
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), 0.5, self.training)
        return self.fc2(x)


def mnist_classifier() -> DigitClassifier:
    """The LeNet-style classifier for (1, 28, 28) digits."""
    return DigitClassifier((1, 28, 28))


def svhn_classifier() -> DigitClassifier:
    """The small CNN for (3, 32, 32) digits."""
    return DigitClassifier((3, 32, 32))


def _float(x: Tensor) -> Tensor:
    """uint8 images to [0, 1] floats, token indices (int64) unchanged, the rest as float."""
    return x.float().div(255.0) if x.dtype == torch.uint8 else x if x.dtype == torch.long else x.float()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Fraction of `images` (uint8 or float in [0, 1]) that `model` labels correctly."""
    model.eval()
    p = next(model.parameters(), None)
    device = torch.device("cpu") if p is None else p.device
    correct = 0
    for start in range(0, len(images), batch_size):
        x = _float(images[start : start + batch_size]).to(device)
        correct += int((model(x).argmax(1).cpu() == labels[start : start + batch_size]).sum())
    return correct / max(len(images), 1)


def train_classifier(
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[DigitClassifier, float]:
    """Train a `DigitClassifier` for the image shape with Adam; return it and its test accuracy."""
    torch.manual_seed(seed)
    model = DigitClassifier(tuple(images.shape[1:])).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    labels = labels.long()
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    start_time = time.time()
    with tqdm(total=steps, desc="classifier", unit="step", disable=not progress) as bar:
        for epoch in range(epochs):
            model.train()
            for rows in torch.randperm(len(images), generator=g).split(batch_size):
                x, y = _float(images[rows]).to(device), labels[rows].to(device)
                loss = F.cross_entropy(model(x), y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                bar.update(1)
            bar.set_postfix(
                epoch=epoch + 1, loss=f"{loss.item():.3f}", s=f"{time.time() - start_time:.0f}"
            )
    return model, accuracy(model, test_images, test_labels.long())

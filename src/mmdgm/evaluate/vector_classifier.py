"""A small MLP classifier for 1-D feature-vector modalities (the counterpart of the
LeNet-style `DigitClassifier` for images), used to score coherence on vector data."""

from __future__ import annotations

from torch import Tensor, nn


class VectorClassifier(nn.Module):
    """fc(dim->hidden) relu dropout, fc(hidden->hidden) relu dropout, fc(hidden->classes)."""

    def __init__(self, dim: int, classes: int = 10, hidden: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, classes) of float vectors (B, dim)."""
        return self.net(x)

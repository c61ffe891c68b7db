"""What every metric receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from mmdgm.data import MultimodalDataset
from mmdgm.models.base import MultimodalVAE


@dataclass
class EvalContext:
    """A trained model, its data and the digit classifiers used to score coherence.

    Attributes:
        model: the model in eval mode.
        test_set / train_set: the run's datasets (train_set for probes fitted on train data).
        full_train: builds (once) the train split of the full data the run's was drawn from,
            without the observation protocol's masking or sub-sampling and without
            re-pairing (`mmdgm.run.load_dataset(..., full=True)`), for instruments that must
            be the same for every protocol; None where the context has none.
        classifiers: modality name -> classifier returning logits (None where a metric
            needs none); loaded through `mmdgm.evaluate.classifier_store`.
        out_dir: where figures go (the run directory's `eval/` folder).
        batch_size: evaluation batch size.
        seed: seed for every random draw of the evaluation.
        progress: show progress bars.
    """

    model: MultimodalVAE
    test_set: MultimodalDataset
    train_set: MultimodalDataset | None = None
    full_train: Callable[[], MultimodalDataset] | None = None
    classifiers: dict[str, nn.Module] | None = None
    out_dir: Path = field(default_factory=lambda: Path("eval"))
    batch_size: int = 256
    seed: int = 0
    progress: bool = True

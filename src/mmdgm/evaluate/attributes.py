"""Attribute-level coherence on datasets whose labels encode attributes (the synthetic
image-caption benchmark, `mmdgm.data.synthetic_captions`).

Two attribute readers, both with `attributes(x) -> (B, A)` value indices (-1: unreadable)
and a `forward` giving scores over the joint attribute combinations (the row labels), so
the classifier store trains, tests and caches them like the digit classifiers, and
`cross_coherence` / `joint_coherence` with them score "every attribute right":
- `SceneAttributeClassifier`: a small CNN with one softmax head per attribute; its joint
  scores are sum_a log p_a(value_a), normalised over combinations, so cross-entropy on the
  joint label is the sum of the per-attribute cross-entropies.
- `CaptionAttributeReader`: the deterministic caption parser (`parse_caption`) as a
  lookup table over the vocabulary (token -> attribute slot and value); nothing to train.

`attribute_coherence` reports, per attribute and on average ("mean"), the share of
attributes preserved: in cross generation (the attributes read from the generated modality
against the row's true attributes), in joint generation (the attributes of the generated
image against those of the caption generated from the same prior draw), and on the test
data themselves (the readers' agreement on real pairs, the ceiling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdgm.data.base import attribute_digits, attribute_label
from mmdgm.data.scene_captions import lexicon
from mmdgm.data.scenes import ATTRIBUTES
from mmdgm.data.vocabulary import Vocabulary
from mmdgm.evaluate.common import module_device, row_batches, seeded
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS

SLOTS = ("shape", "size", "colour", "vertical", "horizontal", "background")


def check_sizes(classes: int | list[int]) -> list[int]:
    """The attribute sizes of an attribute reader (the store passes them as `classes`)."""
    if isinstance(classes, int) or not classes or any(int(k) < 2 for k in classes):
        raise ValueError(f"attribute readers need a list of attribute sizes (each >= 2), got {classes!r}")
    return [int(k) for k in classes]


class SceneAttributeClassifier(nn.Module):
    """conv k4 s2 p1 (32, 64, 64, 128; BatchNorm, ReLU) -> fc 128 ReLU dropout -> one head per
    attribute. (Without BatchNorm, shape stays near chance after 10 epochs at level 5.)"""

    def __init__(self, shape: tuple[int, ...], classes: list[int]) -> None:
        super().__init__()
        if len(shape) != 3 or tuple(shape[1:]) != (64, 64):
            raise ValueError(f"the scene attribute classifier needs C x 64 x 64 images, got {shape}")
        self.sizes = check_sizes(classes)
        self.body = nn.Sequential(
            nn.Conv2d(shape[0], 32, 4, 2, 1), nn.BatchNorm2d(32), nn.ReLU(True),
            nn.Conv2d(32, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.Conv2d(64, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.Flatten(), nn.Linear(128 * 16, 128), nn.ReLU(True), nn.Dropout(0.2),
            nn.Linear(128, sum(self.sizes)),
        )
        self.register_buffer("digits", attribute_digits(torch.arange(math.prod(self.sizes)), self.sizes), False)

    def log_probs(self, x: Tensor) -> list[Tensor]:
        """Per-attribute log-probabilities, each (B, size_a)."""
        return [F.log_softmax(h, -1) for h in self.body(x).split(self.sizes, -1)]

    def forward(self, x: Tensor) -> Tensor:
        """(B, prod sizes) joint scores sum_a log p_a(value_a of the combination)."""
        return sum(lp[:, self.digits[:, a]] for a, lp in enumerate(self.log_probs(x)))

    def attributes(self, x: Tensor) -> Tensor:
        return torch.stack([lp.argmax(-1) for lp in self.log_probs(x)], -1)


class CaptionAttributeReader(nn.Module):
    """`parse_caption` over token indices (B, L) or scores (B, L, V) (argmax per position),
    reading each caption up to its first end token. `table` (V, 6): the value each token
    states for each slot of `SLOTS` (-1: none), filled by `set_vocabulary` (and saved in the
    state dict). Scores (B, prod sizes + 1): one-hot of the joint label, the last column for
    an unreadable caption."""

    def __init__(self, shape: tuple[int, ...], classes: list[int]) -> None:
        super().__init__()
        if len(shape) != 2:
            raise ValueError(f"the caption attribute reader needs captions of shape (L, V), got {shape}")
        self.sizes = check_sizes(classes)
        names = list(ATTRIBUTES)[: len(self.sizes)]
        if self.sizes != [len(ATTRIBUTES[a]) for a in names]:
            raise ValueError(f"attribute sizes {self.sizes} are not those of the synthetic scenes' first attributes")
        self.names = names
        self.register_buffer("table", torch.full((shape[1], len(SLOTS)), -1, dtype=torch.long))

    def set_vocabulary(self, vocab: Vocabulary) -> None:
        """Fill `table` from the caption lexicon; the end token's index is `vocab.eos`."""
        if len(vocab) != self.table.shape[0]:
            raise ValueError(f"vocabulary of {len(vocab)} words for a reader of {self.table.shape[0]}")
        self.table.fill_(-1)
        for word, (slot, value) in lexicon().items():
            if word in vocab.index:
                self.table[vocab.index[word], SLOTS.index(slot)] = value

    def attributes(self, x: Tensor) -> Tensor:
        index = x.argmax(-1) if torch.is_floating_point(x) else x.long()
        before_end = torch.cumsum(index == Vocabulary.eos, -1) == 0
        values = torch.where(before_end.unsqueeze(-1), self.table[index], -1)  # (B, L, slots)

        def one(slot: int, size: int) -> Tensor:
            found = F.one_hot(values[..., slot] + 1, size + 1)[..., 1:].amax(1)  # (B, size)
            return torch.where(found.sum(-1) == 1, found.argmax(-1), -1)

        out = []
        for a, name in enumerate(self.names):
            if name == "position":
                v, h = one(SLOTS.index("vertical"), 2), one(SLOTS.index("horizontal"), 2)
                out.append(torch.where((v >= 0) & (h >= 0), 2 * v + h, -1))
            else:
                out.append(one(SLOTS.index(name), self.sizes[a]))
        return torch.stack(out, -1)

    def forward(self, x: Tensor) -> Tensor:
        digits = self.attributes(x)
        unreadable = (digits < 0).any(-1)
        label = attribute_label(digits.clamp_min(0), self.sizes).to(digits.device)
        label = torch.where(unreadable, math.prod(self.sizes), label)
        return F.one_hot(label, math.prod(self.sizes) + 1).float()


def attribute_readers(ctx: EvalContext) -> tuple[str, str, nn.Module, nn.Module]:
    """(image name, caption name, image reader, caption reader) of the context."""
    ds = ctx.test_set
    if ds.attributes is None:
        raise ValueError(f"attribute_coherence needs a dataset with attributes (synthetic-captions), not {ds.name!r}")
    captions = [m for m in ctx.model.names if m in ds.vocabularies]
    images = [m for m in ctx.model.names if m not in ds.vocabularies]
    if len(captions) != 1 or len(images) != 1:
        raise ValueError(f"attribute_coherence needs one image and one caption modality, got {ctx.model.names}")
    readers = {}
    for m in (images[0], captions[0]):
        reader = (ctx.classifiers or {}).get(m)
        if not hasattr(reader, "attributes"):
            raise ValueError(f"attribute_coherence needs an attribute reader for {m!r} (mmdgm classifiers train)")
        readers[m] = reader.eval()
    return images[0], captions[0], readers[images[0]], readers[captions[0]]


def read(reader: nn.Module, x: Tensor) -> Tensor:
    return reader.attributes(x.to(module_device(reader))).cpu()


def shares(hits: Tensor, names: list[str]) -> dict[str, float]:
    """Per-attribute share of True in `hits` (N, A), their mean, and the exact-match share."""
    out = {a: float(hits[:, i].double().mean()) for i, a in enumerate(names)}
    out["mean"] = float(hits.double().mean())
    out["all"] = float(hits.all(-1).double().mean())
    return out


@METRICS.register("attribute_coherence")
def attribute_coherence(ctx: EvalContext, n: int = 1000) -> dict:
    """Share of attributes preserved, per attribute, averaged ("mean") and all at once
    ("all"): "<image>-><caption>" and "<caption>-><image>" cross generations against the
    test rows' attributes, "joint" (image vs caption of `n` prior draws) and "data" (the
    readers on the test pairs themselves)."""
    image, text, image_reader, text_reader = attribute_readers(ctx)
    names = list(ctx.test_set.attributes)
    model, device = ctx.model, module_device(ctx.model)
    hits: dict[str, list[Tensor]] = {f"{image}->{text}": [], f"{text}->{image}": [], "data": [], "joint": []}
    with torch.no_grad(), seeded(ctx.seed, device):
        for rows in row_batches(len(ctx.test_set), ctx.batch_size, "attribute coherence", ctx.progress):
            batch = ctx.test_set.batch(rows)
            keep = batch.mask[image] & batch.mask[text]
            if not keep.any():
                continue
            sub = batch.select(keep)
            truth = ctx.test_set.attribute_values(sub.labels)
            sub = sub.to(device)
            hits["data"].append((read(image_reader, sub.data[image]) == read(text_reader, sub.data[text])))
            for source, target, reader in ((image, text, text_reader), (text, image, image_reader)):
                generated = model.cross_generate(sub, source, target)
                hits[f"{source}->{target}"].append(read(reader, generated) == truth)
        for rows in row_batches(n, ctx.batch_size, "attribute joint coherence", ctx.progress):
            generated = model.sample(len(rows))
            hits["joint"].append(read(image_reader, generated[image]) == read(text_reader, generated[text]))
    out = {k: shares(torch.cat(v), names) for k, v in hits.items() if v}
    return {**out, "n": n, "rows": sum(len(h) for h in hits["data"])}

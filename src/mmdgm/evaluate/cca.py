"""CCA coherence of image-caption models (MMVAE §4.3, Table 4).

A `CCAEvaluator` (`mmdgm.evaluate.cca_core`: SIF sentence embeddings over word vectors
trained on the training captions, image features or PCA of pixels, CCA with k components)
is fitted on the run's training pairs; each entry is the mean cosine of the centred CCA
projections of (image, caption) pairs: the real test pairs ("ground_truth", reported
next to every model as the papers do), test images with the captions generated from them
("<image>-><caption>"), captions with the images generated from them
("<caption>-><image>") and joint generations from the prior ("joint").
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmdgm.data import MultimodalDataset
from mmdgm.evaluate.cca_core import CCAEvaluator
from mmdgm.evaluate.common import fit_set, module_device, row_batches, seeded
from mmdgm.evaluate.context import EvalContext
from mmdgm.evaluate.registry import METRICS


def image_and_caption(ctx: EvalContext) -> tuple[str, str]:
    """The model's one image modality and one caption modality (one with a vocabulary)."""
    captions = [m for m in ctx.model.names if m in ctx.test_set.vocabularies]
    images = [m for m in ctx.model.names if len(ctx.model.modalities[m].shape) == 3]
    if len(captions) != 1 or len(images) != 1:
        raise ValueError(f"cca_coherence needs one image and one caption modality (a dataset with a vocabulary, "
                         f"e.g. cub or synthetic-captions); the model has {ctx.model.names}")
    return images[0], captions[0]


def paired_rows(ds: MultimodalDataset, image: str, caption: str, n: int | None, seed: int) -> Tensor:
    """Up to `n` rows observing both modalities, a seeded random choice (all when None)."""
    both = ds.mask[image] & ds.mask[caption]
    rows = torch.nonzero(both).flatten()
    if n is not None and n < len(rows):
        rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:n]]
    if len(rows) < 2:
        raise ValueError(f"cca_coherence: dataset {ds.name!r} has {len(rows)} rows observing {image} and {caption}")
    return rows


def real_pairs(ctx: EvalContext, ds: MultimodalDataset, rows: Tensor, image: str, caption: str):
    """(images as a float array, captions as word lists) of `rows`."""
    vocab = ds.vocabularies[caption]
    images, words = [], []
    for chunk in row_batches(len(rows), ctx.batch_size, "CCA pairs", ctx.progress):
        batch = ds.batch(rows[chunk])
        images.append(batch.data[image].float().cpu())
        words += vocab.tokens(batch.data[caption].cpu())
    return torch.cat(images).numpy(), words


@METRICS.register("cca_coherence")
@torch.no_grad()
def cca_coherence(ctx: EvalContext, n_train: int | None = 10000, n: int | None = 1000, k: int = 40,
                  backend: str = "auto", pca_components: int = 128, scaling: str = "unit-variance",
                  fit_pairs: str = "observed") -> dict:
    """MMVAE Table 4: CCA correlation of real test pairs, cross generations and joint
    generations (module docstring). Options: `n_train` training pairs for the fit (None: all),
    `n` test pairs and prior draws, `k` CCA components, word-vector `backend` ("auto":
    gensim's FastText when installed, else "ppmi-svd"), `pca_components` of the pixels,
    `scaling` ("unit-variance" or "mmvae-code"), `fit_pairs` ("observed": the pairs the run
    observed; "all": every pair of the full training data, before the observation
    protocol masked or sub-sampled it (`EvalContext.full_train`), so runs of one data set
    under different `observed_fraction` or `unimodal_fraction` share one CCA, as MEME
    Table 5's one ground truth). Returns the four scores and the evaluator's summary."""
    fitted_on = fit_set(ctx, fit_pairs, "cca_coherence")
    image, caption = image_and_caption(ctx)
    vocab = ctx.test_set.vocabularies[caption]
    train = real_pairs(ctx, fitted_on, paired_rows(fitted_on, image, caption, n_train, ctx.seed), image, caption)
    evaluator = CCAEvaluator(k=k, backend=backend, pca_components=pca_components, scaling=scaling,
                             seed=ctx.seed).fit(*train)
    test_rows = paired_rows(ctx.test_set, image, caption, n, ctx.seed)
    test_images, test_words = real_pairs(ctx, ctx.test_set, test_rows, image, caption)
    model, device = ctx.model, module_device(ctx.model)
    to_caption, to_image, joint_images, joint_words = [], [], [], []
    with seeded(ctx.seed, device):
        for chunk in row_batches(len(test_rows), ctx.batch_size, "CCA cross generation", ctx.progress):
            batch = ctx.test_set.batch(test_rows[chunk]).to(device)
            to_caption += vocab.tokens(model.cross_generate(batch, image, caption).cpu())
            to_image.append(model.cross_generate(batch, caption, image).float().cpu())
        for chunk in row_batches(len(test_rows), ctx.batch_size, "CCA joint generation", ctx.progress):
            joint = model.sample(len(chunk), [image, caption])
            joint_images.append(joint[image].float().cpu())
            joint_words += vocab.tokens(joint[caption].cpu())
    return {
        "ground_truth": evaluator.ground_truth(test_images, test_words),
        f"{image}->{caption}": evaluator.score(test_images, to_caption),
        f"{caption}->{image}": evaluator.score(torch.cat(to_image).numpy(), test_words),
        "joint": evaluator.score(torch.cat(joint_images).numpy(), joint_words),
        "n_train": len(train[1]), "n": len(test_words), "evaluator": evaluator.summary(),
    }

"""CCA coherence of image-caption pairs (MMVAE §4.3, eq. 4, Table 4; the authors'
`report/analyse_cub.py` and `report/helper.py`).

Captions become SIF sentence embeddings (`sentence_embedding`), images become features (given
arrays, or PCA of the pixels), CCA with k components is fitted on the training pairs, and a pair
scores the cosine of its two centred projections,
    corr(x1, x2) = phi1(x1)^T phi2(x2) / (||phi1(x1)|| ||phi2(x2)||),  phi_n(x) = W_n^T (x - mean_n),
the means being those of the training features (eq. 4). Nothing here knows about a model or a
dataset: inputs are numpy arrays and lists of word lists.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import PCA

from mmdgm.evaluate.sentence_embedding import (
    SIFEmbedder,
    WordVectors,
    check_sentences,
    check_word_options,
    resolve_backend,
    train_word_vectors,
)
from mmdgm.seeds import derived_seed

CCA_SCALINGS = ("unit-variance", "mmvae-code")


def check_matrix(X: object, name: str, ndim: int | None = 2) -> np.ndarray:
    """X as a finite float64 array (of `ndim` dimensions when given), or a clear error."""
    X = np.asarray(X, dtype=np.float64)
    if ndim is not None and X.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return X


def _inverse_sqrt(S: np.ndarray, ridge: float, name: str) -> np.ndarray:
    """(S + ridge * mean eigenvalue * I)^(-1/2) of a covariance S, by eigendecomposition; directions
    of numerically zero variance (eigenvalue <= d * machine epsilon * the largest) are dropped,
    as in a pseudo-inverse."""
    lam, Q = np.linalg.eigh(S)
    lam = np.clip(lam, 0.0, None)
    if not lam.max() > 0:
        raise ValueError(f"CCA: the {name} features have zero variance")
    kept = lam > len(lam) * np.finfo(np.float64).eps * lam.max()
    inv = np.zeros_like(lam)
    inv[kept] = 1.0 / np.sqrt(lam[kept] + ridge * lam.mean())
    return (Q * inv) @ Q.T


class CCA:
    """Two-view canonical correlation analysis by whitening and SVD (Hotelling 1936).

    With covariances S11, S22, S12 of the centred training views (1/(N-1)), the SVD
    K1 S12 K2 = U diag(rho) V^T, K_n = (S_nn + r I)^(-1/2), gives the canonical correlations rho
    and projections W1 = K1 U[:, :k], W2 = K2 V[:, :k], so that W_n^T S_nn W_n = I ("unit-variance"
    canonical variates). The ridge r is `ridge` times the mean variance of the view (it shrinks
    the correlations by about r / (smallest variance) / 2); directions without training variance,
    e.g. the removed principal component of the sentence embeddings, are left out.
    `scaling="mmvae-code"` rescales each column pair [w1; w2] to unit Euclidean norm, as
    scipy.linalg.eig returns the generalised eigenvectors in the authors' `cca`; the cosine
    score depends on this per-component scale (it weights the k components differently).
    """

    def __init__(self, k: int = 40, ridge: float = 1e-6, scaling: str = "unit-variance") -> None:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"CCA: k must be a positive integer, got {k!r}")
        if not (isinstance(ridge, (int, float)) and 0 <= ridge < 1):
            raise ValueError(f"CCA: ridge must be in [0, 1), got {ridge!r}")
        if scaling not in CCA_SCALINGS:
            raise ValueError(f"CCA: scaling must be one of {CCA_SCALINGS}, got {scaling!r}")
        self.k, self.ridge, self.scaling = int(k), float(ridge), scaling

    def fit(self, X: np.ndarray, Y: np.ndarray) -> CCA:
        """Fit on paired rows X (N, d1), Y (N, d2)."""
        X, Y = check_matrix(X, "CCA view 1"), check_matrix(Y, "CCA view 2")
        n = X.shape[0]
        if Y.shape[0] != n:
            raise ValueError(f"CCA: the views have different numbers of rows ({n} and {Y.shape[0]})")
        if self.k > min(X.shape[1], Y.shape[1]):
            raise ValueError(f"CCA: k={self.k} is larger than the dimensions of the views "
                             f"({X.shape[1]} and {Y.shape[1]})")
        if self.k > n - 1:
            raise ValueError(f"CCA: k={self.k} needs more than {self.k} training pairs, got {n}")
        self.mean1, self.mean2 = X.mean(axis=0), Y.mean(axis=0)
        Xc, Yc = X - self.mean1, Y - self.mean2
        K1 = _inverse_sqrt(Xc.T @ Xc / (n - 1), self.ridge, "first view's")
        K2 = _inverse_sqrt(Yc.T @ Yc / (n - 1), self.ridge, "second view's")
        U, rho, Vt = np.linalg.svd(K1 @ (Xc.T @ Yc / (n - 1)) @ K2)
        W1, W2 = K1 @ U[:, : self.k], K2 @ Vt[: self.k].T
        if self.scaling == "mmvae-code":
            norm = np.sqrt((W1**2).sum(axis=0) + (W2**2).sum(axis=0))
            W1, W2 = W1 / norm, W2 / norm
        self.W1, self.W2, self.correlations = W1, W2, rho[: self.k]
        return self

    def project(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centred projections phi1(X) = (X - mean1) W1 and phi2(Y) = (Y - mean2) W2 (eq. 4)."""
        if not hasattr(self, "W1"):
            raise RuntimeError("CCA: call fit() first")
        X, Y = check_matrix(X, "CCA view 1"), check_matrix(Y, "CCA view 2")
        for name, Z, W in (("view 1", X, self.W1), ("view 2", Y, self.W2)):
            if Z.shape[1] != W.shape[0]:
                raise ValueError(f"CCA {name}: fitted on {W.shape[0]} features, got {Z.shape[1]}")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"CCA: the views have different numbers of rows ({X.shape[0]} and {Y.shape[0]})")
        return (X - self.mean1) @ self.W1, (Y - self.mean2) @ self.W2


def cosine_rows(A: np.ndarray, B: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Row-wise cosine a.b / (max(|a|, eps) max(|b|, eps)), torch's cosine_similarity (0 for a zero row)."""
    na = np.maximum(np.linalg.norm(A, axis=1), eps)
    nb = np.maximum(np.linalg.norm(B, axis=1), eps)
    return (A * B).sum(axis=1) / (na * nb)


class CCAEvaluator:
    """CCA coherence (MMVAE §4.3): fit on training (image, caption) pairs, then score any pairs.

    Images: (N, d) arrays are features used as given (e.g. ResNet-101 features, as the paper);
    (N, C, H, W) or (N, H, W) arrays are pixels, flattened and reduced by a PCA fitted on the
    training images to min(`pca_components`, pixels, N - 1) dimensions. Captions: lists of
    words, embedded by SIF (`sif_a`, `remove_first_pc`) over word vectors trained on the training
    captions with `backend` ('auto': gensim's FastText when installed, else 'ppmi-svd'), or over
    given `word_vectors`. Then CCA with `k` components (`ridge`, `scaling`, see `CCA`).
    """

    def __init__(self, k: int = 40, backend: str = "auto", dim: int = 300, window: int = 3, min_count: int = 3,
                 epochs: int = 10, sif_a: float | None = 1e-3, remove_first_pc: bool = True,
                 pca_components: int = 128, ridge: float = 1e-6, scaling: str = "unit-variance", seed: int = 0,
                 word_vectors: WordVectors | None = None) -> None:
        if not isinstance(pca_components, (int, np.integer)) or pca_components < 1:
            raise ValueError(f"CCA coherence: pca_components must be a positive integer, got {pca_components!r}")
        if sif_a is not None and not sif_a > 0:
            raise ValueError(f"CCA coherence: sif_a must be > 0 (or None for the plain average), got {sif_a!r}")
        self.cca = CCA(k, ridge, scaling)
        self.backend = "given" if word_vectors is not None else resolve_backend(backend)
        self.word_options = dict(dim=dim, window=window, min_count=min_count, epochs=epochs)
        check_word_options(**self.word_options)
        self.sif_a, self.remove_first_pc = sif_a, remove_first_pc
        self.pca_components, self.seed = int(pca_components), seed
        self.given_word_vectors = self.word_vectors = word_vectors
        self.pca: PCA | None = None
        self.image_shape: tuple[int, ...] | None = None

    def fit(self, images: np.ndarray, sentences: Sequence[Sequence[str]]) -> CCAEvaluator:
        """Fit word vectors, SIF, the image PCA (for pixels) and CCA on the training pairs."""
        images = check_matrix(images, "training images", ndim=None)
        sentences = check_sentences(sentences, "training sentences")
        if images.ndim < 2 or images.shape[0] != len(sentences):
            raise ValueError(f"CCA coherence: {images.shape[0] if images.ndim else 0} training images "
                             f"(shape {images.shape}) for {len(sentences)} sentences")
        self.word_vectors = self.given_word_vectors or train_word_vectors(
            sentences, self.backend, seed=derived_seed(self.seed, "cca/words"), **self.word_options)
        counts = Counter(w for s in sentences for w in s)
        self.sif = SIFEmbedder(self.word_vectors, counts, self.sif_a, self.remove_first_pc).fit(sentences)
        self.image_shape, self.pca = images.shape[1:], None
        if images.ndim > 2:
            flat = images.reshape(len(images), -1)
            n = min(self.pca_components, flat.shape[1], len(flat) - 1)
            self.pca = PCA(n, random_state=derived_seed(self.seed, "cca/pca")).fit(flat)
        self.cca.fit(self._image_features(images), self.sif.transform(sentences))
        return self

    def _image_features(self, images: np.ndarray) -> np.ndarray:
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"CCA coherence: fitted on images of shape {self.image_shape}, "
                             f"got {images.shape[1:]}")
        if self.pca is None:
            return images
        return self.pca.transform(images.reshape(len(images), -1))

    def features(self, images: np.ndarray, sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """The image features and sentence embeddings CCA sees."""
        if self.image_shape is None:
            raise RuntimeError("CCA coherence: call fit() on the training pairs first")
        images = check_matrix(images, "images", ndim=None)
        sentences = check_sentences(sentences)
        if images.ndim < 2 or images.shape[0] != len(sentences):
            raise ValueError(f"CCA coherence: {images.shape[0] if images.ndim else 0} images "
                             f"(shape {images.shape}) for {len(sentences)} sentences")
        return self._image_features(images), self.sif.transform(sentences)

    def pair_scores(self, images: np.ndarray, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        """(N,) cosine of the centred CCA projections of each (image, sentence) pair (eq. 4)."""
        return cosine_rows(*self.cca.project(*self.features(images, sentences)))

    def score(self, images: np.ndarray, sentences: Sequence[Sequence[str]]) -> float:
        """Mean over the pairs of eq. 4 (the entries of MMVAE Table 4)."""
        return float(self.pair_scores(images, sentences).mean())

    def ground_truth(self, test_images: np.ndarray, test_sentences: Sequence[Sequence[str]]) -> float:
        """The score of the real test pairs, reported next to every model (Table 4, 'Ground Truth')."""
        return self.score(test_images, test_sentences)

    def summary(self) -> dict:
        """JSON-serialisable description of the fitted evaluator."""
        return {
            "k": self.cca.k,
            "backend": self.word_vectors.backend if self.word_vectors is not None else self.backend,
            "vocabulary": len(self.word_vectors.words) if self.word_vectors is not None else None,
            "word_dim": self.word_vectors.dim if self.word_vectors is not None else None,
            "image_features": "pca-of-pixels" if self.pca is not None else "given",
            "image_dim": int(self.cca.W1.shape[0]) if hasattr(self.cca, "W1") else None,
            "correlations": [float(r) for r in getattr(self.cca, "correlations", [])],
            "scaling": self.cca.scaling,
            "sif_a": self.sif_a,
            "remove_first_pc": self.remove_first_pc,
        }

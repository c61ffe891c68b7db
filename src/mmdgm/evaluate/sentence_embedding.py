"""Sentence embeddings for CCA coherence (MMVAE §4.3 and the authors' `report/helper.py`):
word vectors trained on the training captions, then SIF-weighted averages with the first
principal component removed (Arora, Liang and Ma 2017, Algorithm 1).

Sentences are lists of words (`list[list[str]]`); nothing here knows about a dataset or a model.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import svds

WORD_BACKENDS = ("auto", "gensim", "ppmi-svd")


def check_sentences(sentences: Sequence[Sequence[str]], name: str = "sentences") -> list[list[str]]:
    """The sentences as a list of lists of words; a clear error for anything else."""
    if isinstance(sentences, (str, bytes)) or not isinstance(sentences, Sequence):
        raise TypeError(f"{name}: expected a list of sentences (lists of words), got {type(sentences).__name__}")
    out = []
    for i, s in enumerate(sentences):
        if isinstance(s, (str, bytes)) or not isinstance(s, Sequence):
            raise TypeError(f"{name}[{i}]: expected a list of words, got {type(s).__name__}")
        for w in s:
            if not isinstance(w, str):
                raise TypeError(f"{name}[{i}]: words must be str, got {type(w).__name__}")
        out.append(list(s))
    return out


@dataclass(frozen=True)
class WordVectors:
    """A table of word vectors: `vectors[i]` embeds `words[i]`; `backend` names their origin."""

    words: tuple[str, ...]
    vectors: np.ndarray
    backend: str = "given"
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vectors = np.asarray(self.vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[0] != len(self.words):
            raise ValueError(f"word vectors: expected shape ({len(self.words)}, dim), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("word vectors: contain NaN or infinite values")
        index = {w: i for i, w in enumerate(self.words)}
        if len(index) != len(self.words):
            raise ValueError("word vectors: repeated words")
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "index", index)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def resolve_backend(backend: str) -> str:
    """'auto' is 'gensim' when gensim is installed (the paper's FastText), else 'ppmi-svd'."""
    if backend not in WORD_BACKENDS:
        raise ValueError(f"word-vector backend must be one of {WORD_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "gensim" if importlib.util.find_spec("gensim") is not None else "ppmi-svd"
    return backend


def check_word_options(**options: int) -> None:
    """Word-vector sizes (dim, window, min_count, epochs) must be positive integers."""
    for name, value in options.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"word vectors: {name} must be a positive integer, got {value!r}")


def train_word_vectors(sentences: Sequence[Sequence[str]], backend: str = "auto", dim: int = 300, window: int = 3,
                       min_count: int = 3, seed: int = 0, epochs: int = 10) -> WordVectors:
    """Word vectors for every word seen at least `min_count` times in `sentences`.

    'gensim': FastText (Bojanowski et al. 2017; the MMVAE code: 300-d, window 3, min count 3,
    10 epochs, gensim's other defaults), one worker thread so that a seed fixes the result.
    'ppmi-svd': positive PMI of co-occurrence within the window, factorised by truncated SVD
    (Levy and Goldberg 2014) -- a deterministic, dependency-free stand-in, not the paper's.
    """
    sentences = check_sentences(sentences)
    check_word_options(dim=dim, window=window, min_count=min_count, epochs=epochs)
    backend = resolve_backend(backend)
    counts = Counter(w for s in sentences for w in s)
    if not any(c >= min_count for c in counts.values()):
        raise ValueError(f"word vectors: no word occurs at least min_count={min_count} times")
    if backend == "gensim":
        return _fasttext_vectors(sentences, dim, window, min_count, seed, epochs)
    return ppmi_svd_vectors(sentences, dim, window, min_count, seed)


def _fasttext_vectors(sentences: list[list[str]], dim: int, window: int, min_count: int, seed: int,
                      epochs: int) -> WordVectors:
    if importlib.util.find_spec("gensim") is None:
        raise ImportError("word-vector backend 'gensim' needs gensim: pip install 'mmdgm[text]'")
    from gensim.models import FastText

    model = FastText(vector_size=dim, window=window, min_count=min_count, seed=seed, workers=1, epochs=epochs)
    model.build_vocab(corpus_iterable=sentences)
    model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=epochs)
    words = tuple(model.wv.index_to_key)
    return WordVectors(words, np.stack([model.wv[w] for w in words]), backend="gensim")


def ppmi_svd_vectors(sentences: Sequence[Sequence[str]], dim: int = 300, window: int = 3, min_count: int = 3,
                     seed: int = 0, cds: float = 0.75, eig: float = 0.5) -> WordVectors:
    """PPMI-SVD word vectors (Levy and Goldberg 2014; Levy, Goldberg and Dagan 2015).

    Words seen fewer than `min_count` times are dropped from the sentences first (as word2vec
    does); every pair of kept words at most `window` apart counts once in each direction.
    PPMI(w, c) = max(0, log P(w, c) / (P(w) P_cds(c))), with the context distribution raised to
    `cds` (0.75); vectors U_d S_d^eig of its top `dim` singular triplets (d = min(dim, vocabulary)),
    each singular vector signed so that its largest entry is positive.
    """
    counts = Counter(w for s in sentences for w in s)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    index = {w: i for i, w in enumerate(words)}
    V = len(words)
    ids = [np.array([index[w] for w in s if w in index], dtype=np.int64) for s in sentences]
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(ids)), [len(a) for a in ids])
    rows, cols = [], []
    for d in range(1, window + 1):
        same = owner[d:] == owner[:-d]
        rows += [flat[:-d][same], flat[d:][same]]
        cols += [flat[d:][same], flat[:-d][same]]
    r, c = np.concatenate(rows), np.concatenate(cols)
    C = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(V, V)).tocsr()
    C.sum_duplicates()
    M = _ppmi(C, cds)
    rank = min(dim, V)
    if rank < V - 1:
        v0 = np.random.default_rng(seed).standard_normal(V)
        U, S, _ = svds(M, k=rank, v0=v0, solver="arpack")
        order = np.argsort(-S)
        U, S = U[:, order], S[order]
    else:
        U, S, _ = np.linalg.svd(M.toarray())
        U, S = U[:, :rank], S[:rank]
    return WordVectors(tuple(words), orient_columns(U) * S**eig, backend="ppmi-svd")


def orient_columns(U: np.ndarray) -> np.ndarray:
    """U with each column's sign chosen so that its largest-magnitude entry is positive."""
    peak = U[np.abs(U).argmax(axis=0), np.arange(U.shape[1])]
    return U * np.where(peak < 0, -1.0, 1.0)


def _ppmi(C: sparse.csr_matrix, cds: float) -> sparse.csr_matrix:
    """Positive PMI of a co-occurrence count matrix, with context distribution smoothing."""
    total = C.sum()
    if total == 0:
        return C.astype(np.float64)
    p_w = np.asarray(C.sum(axis=1)).ravel() / total
    col = np.asarray(C.sum(axis=0)).ravel() ** cds
    p_c = col / col.sum()
    coo = C.tocoo()
    pmi = np.log(coo.data / total) - np.log(p_w[coo.row]) - np.log(p_c[coo.col])
    keep = pmi > 0
    return sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=C.shape)


def sif_weights(counts: Mapping[str, int], a: float = 1e-3) -> dict[str, float]:
    """SIF weight a / (a + p(w)) of every counted word, p(w) = count / total count (Arora et al. 2017)."""
    if not a > 0:
        raise ValueError(f"SIF: a must be > 0, got {a!r}")
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("SIF: empty corpus, no word frequencies")
    return {w: a / (a + c / total) for w, c in counts.items()}


def weighted_average(sentences: Sequence[Sequence[str]], word_vectors: WordVectors,
                     weights: Mapping[str, float] | None) -> np.ndarray:
    """(N, dim) averages (1/|s|) sum_{w in s} weight(w) v_w over each sentence's words that have a
    vector (others are skipped and not counted in |s|); a sentence with none gives a zero vector.
    `weights` None is the plain average; a word with a vector but no weight gets weight 1
    (p(w) = 0 in the SIF formula)."""
    sentences = check_sentences(sentences)
    out = np.zeros((len(sentences), word_vectors.dim))
    idx = word_vectors.index
    for i, s in enumerate(sentences):
        known = [w for w in s if w in idx]
        if not known:
            continue
        wts = np.array([1.0 if weights is None else weights.get(w, 1.0) for w in known])
        out[i] = wts @ word_vectors.vectors[[idx[w] for w in known]] / len(known)
    return out


def first_principal_component(X: np.ndarray) -> np.ndarray:
    """Unit first principal direction of the rows of X (centred, as the MMVAE code does), signed
    so that its largest entry is positive."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"principal component: need an (N >= 2, d) matrix, got shape {X.shape}")
    _, _, Vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    return orient_columns(Vt[:1].T)[:, 0]


def remove_component(X: np.ndarray, u: np.ndarray) -> np.ndarray:
    """X - (X u) u^T: each row minus its projection on the unit vector u (SIF step 2)."""
    return X - np.outer(X @ u, u)


class SIFEmbedder:
    """SIF sentence embeddings (Arora et al. 2017): weighted averages with weights a / (a + p(w))
    from word counts of the training captions, minus the projection on the first principal
    component of the training sentences' averages (fitted once, reused for any sentence).
    `a=None` gives the plain average the MMVAE paper's text describes; `remove_first_pc=False`
    keeps the component."""

    def __init__(self, word_vectors: WordVectors, counts: Mapping[str, int], a: float | None = 1e-3,
                 remove_first_pc: bool = True) -> None:
        self.word_vectors = word_vectors
        self.weights = None if a is None else sif_weights(counts, a)
        self.remove_first_pc = remove_first_pc
        self.pc: np.ndarray | None = None

    def fit(self, sentences: Sequence[Sequence[str]]) -> SIFEmbedder:
        """Fit the first principal component on the training sentences."""
        if self.remove_first_pc:
            self.pc = first_principal_component(weighted_average(sentences, self.word_vectors, self.weights))
        return self

    def transform(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        """(N, dim) sentence embeddings."""
        X = weighted_average(sentences, self.word_vectors, self.weights)
        if not self.remove_first_pc:
            return X
        if self.pc is None:
            raise RuntimeError("SIFEmbedder: call fit() on the training sentences first")
        return remove_component(X, self.pc)

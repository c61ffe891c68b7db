"""CCA coherence core (MMVAE §4.3, eq. 4): CCA against direct eigen-decompositions and the
authors' generalised eigenproblem, SIF and PC removal against hand computations, PPMI-SVD
word vectors on synthetic corpora, the evaluator end to end, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from mmdgm.evaluate.cca_core import CCA, CCAEvaluator, cosine_rows
from mmdgm.evaluate.sentence_embedding import (
    SIFEmbedder,
    WordVectors,
    _ppmi,
    first_principal_component,
    ppmi_svd_vectors,
    sif_weights,
    train_word_vectors,
    weighted_average,
)


def correlated_views(n: int, rho: tuple[float, ...], d1: int, d2: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Latent pairs (u_i, v_i) with corr rho_i, padded with independent noise, mixed by random
    invertible maps and shifted: the population canonical correlations are rho (then zeros)."""
    rng = np.random.default_rng(seed)
    r = len(rho)
    u = rng.standard_normal((n, r))
    v = np.asarray(rho) * u + np.sqrt(1 - np.asarray(rho) ** 2) * rng.standard_normal((n, r))
    U = np.hstack([u, rng.standard_normal((n, d1 - r))])
    V = np.hstack([v, rng.standard_normal((n, d2 - r))])
    A, B = rng.standard_normal((d1, d1)) + 3 * np.eye(d1), rng.standard_normal((d2, d2)) + 3 * np.eye(d2)
    return U @ A + 5.0, V @ B - 2.0


def covariances(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    n = len(X)
    return Xc.T @ Xc / (n - 1), Yc.T @ Yc / (n - 1), Xc.T @ Yc / (n - 1)


def test_cca_correlations_match_direct_eigendecomposition_and_population() -> None:
    X, Y = correlated_views(20000, (0.9, 0.6, 0.3), 5, 4, seed=0)
    cca = CCA(k=4, ridge=0.0).fit(X, Y)
    S11, S22, S12 = covariances(X, Y)
    # rho^2 are the eigenvalues of S11^-1 S12 S22^-1 S21
    direct = np.sort(np.linalg.eigvals(np.linalg.solve(S11, S12) @ np.linalg.solve(S22, S12.T)).real)[::-1]
    np.testing.assert_allclose(cca.correlations, np.sqrt(np.clip(direct[:4], 0, None)), atol=1e-9)
    np.testing.assert_allclose(cca.correlations[:3], [0.9, 0.6, 0.3], atol=0.03)
    assert cca.correlations[3] < 0.05
    # unit-variance, mutually uncorrelated canonical variates with cross-covariance diag(rho)
    np.testing.assert_allclose(cca.W1.T @ S11 @ cca.W1, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(cca.W2.T @ S22 @ cca.W2, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(cca.W1.T @ S12 @ cca.W2, np.diag(cca.correlations), atol=1e-9)


def test_mmvae_code_scaling_matches_the_authors_generalised_eigenproblem() -> None:
    """helper.cca: A = [[0, S12], [S21, 0]], B = blockdiag(S11, S22), scipy.linalg.eig(A, B),
    the top-k eigenvalues and their (unit-norm) eigenvectors split into W1, W2."""
    X, Y = correlated_views(3000, (0.8, 0.5), 4, 3, seed=1)
    cca = CCA(k=3, ridge=0.0, scaling="mmvae-code").fit(X, Y)
    S11, S22, S12 = covariances(X, Y)
    A = np.block([[np.zeros((4, 4)), S12], [S12.T, np.zeros((3, 3))]])
    B = scipy.linalg.block_diag(S11, S22)
    w, vecs = scipy.linalg.eig(A, B)
    order = np.argsort(-w.real)[:3]
    np.testing.assert_allclose(cca.correlations, w.real[order], atol=1e-9)
    ours = np.vstack([cca.W1, cca.W2])
    theirs = vecs[:, order].real
    signs = np.sign((ours * theirs).sum(0))
    np.testing.assert_allclose(ours, theirs * signs, atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=0), 1.0, atol=1e-12)


def test_projection_centres_with_the_training_means() -> None:
    X, Y = correlated_views(500, (0.9,), 3, 3, seed=2)
    cca = CCA(k=2).fit(X, Y)
    Xt, Yt = X[:7] * 1.5 + 1.0, Y[:7] - 3.0
    P1, P2 = cca.project(Xt, Yt)
    np.testing.assert_allclose(P1, (Xt - X.mean(0)) @ cca.W1)
    np.testing.assert_allclose(P2, (Yt - Y.mean(0)) @ cca.W2)


def test_cosine_rows_by_hand() -> None:
    A = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    B = np.array([[2.0, 0.0], [1.0, -1.0], [3.0, 4.0]])
    np.testing.assert_allclose(cosine_rows(A, B), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(cosine_rows(np.array([[3.0, 4.0]]), np.array([[4.0, 3.0]])), [24 / 25])


def test_perfectly_related_pairs_score_one_and_shuffled_pairs_zero() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4000, 6)) @ rng.standard_normal((6, 6)) + 1.0
    M = rng.standard_normal((6, 8))
    Y = X @ M + 1e-6 * rng.standard_normal((4000, 8))
    cca = CCA(k=5, ridge=0.0).fit(X[:3000], Y[:3000])
    np.testing.assert_allclose(cca.correlations, 1.0, atol=1e-6)
    assert cosine_rows(*cca.project(X[3000:], Y[3000:])).mean() == pytest.approx(1.0, abs=1e-4)
    shuffled = cosine_rows(*cca.project(X[3000:], Y[3000:][rng.permutation(1000)])).mean()
    assert abs(shuffled) < 0.05  # mean of 1000 cosines of independent 5-d directions: sd ~ 0.014


def test_sif_weights_and_averages_by_hand() -> None:
    corpus = [["a", "b"], ["a", "c", "a"], ["a", "zz"]]  # counts a:4 b:1 c:1 zz:1, total 7
    w = sif_weights({"a": 4, "b": 1, "c": 1, "zz": 1}, a=1e-3)
    assert w["a"] == pytest.approx(1e-3 / (1e-3 + 4 / 7))
    assert w["b"] == pytest.approx(1e-3 / (1e-3 + 1 / 7))
    wv = WordVectors(("a", "b", "c"), np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]))
    weights = sif_weights({"a": 4, "b": 1, "c": 1, "zz": 1}, a=1.0)  # 7/11, 7/8, 7/8, 7/8
    got = weighted_average(corpus + [["zz"], []], wv, weights)
    expected = np.array([
        [7 / 11 / 2, 7 / 8 * 2 / 2],                  # (w_a v_a + w_b v_b) / 2
        [(2 * 7 / 11 + 7 / 8 * 3) / 3, 7 / 8 * 3 / 3],  # (2 w_a v_a + w_c v_c) / 3
        [7 / 11, 0.0],                                # unknown "zz" skipped, |s| = 1
        [0.0, 0.0],                                   # no known word: zero vector
        [0.0, 0.0],                                   # empty sentence: zero vector
    ])
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(weighted_average(corpus[:1], wv, None), [[0.5, 1.0]])  # plain average


def test_first_principal_component_and_removal_by_hand() -> None:
    """2-D: the principal axis of the scatter [[Sxx, Sxy], [Sxy, Syy]] has angle
    theta = atan2(2 Sxy, Sxx - Syy) / 2; removal leaves only the orthogonal coordinate."""
    pts = np.array([[0.0, 0.0], [2.0, 1.0], [4.0, 2.5], [1.0, 1.0], [3.0, 1.0]])
    c = pts - pts.mean(0)
    sxx, syy, sxy = (c[:, 0] ** 2).sum(), (c[:, 1] ** 2).sum(), (c[:, 0] * c[:, 1]).sum()
    theta = 0.5 * math.atan2(2 * sxy, sxx - syy)
    u = first_principal_component(pts)
    np.testing.assert_allclose(u, [math.cos(theta), math.sin(theta)], atol=1e-12)
    wv = WordVectors(tuple("pqrst"), pts)
    sentences = [[w] for w in "pqrst"]
    sif = SIFEmbedder(wv, {}, a=None).fit(sentences)
    out = sif.transform(sentences + [["p", "q"], ["unknown"]])
    perp = np.array([-math.sin(theta), math.cos(theta)])
    rows = np.vstack([pts, (pts[0] + pts[1]) / 2, [0.0, 0.0]])
    np.testing.assert_allclose(out, np.outer(rows @ perp, perp), atol=1e-12)  # not centred: x - (x.u)u


def test_ppmi_by_hand() -> None:
    """PPMI with cds = 1 is max(0, log(C_wc N / (C_w. C_.c)))."""
    C = np.array([[0.0, 4.0, 1.0], [4.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    import scipy.sparse as sp

    got = _ppmi(sp.csr_matrix(C), cds=1.0).toarray()
    N, rows, cols = C.sum(), C.sum(1), C.sum(0)
    with np.errstate(divide="ignore"):
        expected = np.maximum(np.log(C * N / np.outer(rows, cols)), 0.0)
    np.testing.assert_allclose(got, expected)


def topic_corpus(n: int, seed: int) -> list[list[str]]:
    """Sentences of words from one of two disjoint topics, plus shared filler words."""
    rng = np.random.default_rng(seed)
    topics = [["red", "wing", "beak", "crest"], ["blue", "tail", "feet", "belly"]]
    filler = ["the", "a", "has", "with"]
    out = []
    for _ in range(n):
        words = list(rng.choice(topics[rng.integers(2)], 4)) + list(rng.choice(filler, 2))
        rng.shuffle(words)
        out.append([str(w) for w in words])
    return out


def test_ppmi_svd_puts_cooccurring_words_closer_and_is_deterministic() -> None:
    corpus = topic_corpus(600, seed=0)
    wv = ppmi_svd_vectors(corpus, dim=6, window=3, min_count=3, seed=0)
    assert wv.dim == 6 and set(wv.words) == {"red", "wing", "beak", "crest", "blue", "tail", "feet", "belly",
                                              "the", "a", "has", "with"}

    def cos(p: str, q: str) -> float:
        a, b = wv.vectors[wv.index[p]], wv.vectors[wv.index[q]]
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    topics = [["red", "wing", "beak", "crest"], ["blue", "tail", "feet", "belly"]]
    within = [cos(p, q) for t in topics for i, p in enumerate(t) for q in t[i + 1:]]
    across = [cos(p, q) for p in topics[0] for q in topics[1]]
    assert min(within) > max(across) + 0.3, (within, across)
    again = ppmi_svd_vectors(corpus, dim=6, window=3, min_count=3, seed=0)
    assert again.words == wv.words
    np.testing.assert_array_equal(again.vectors, wv.vectors)
    small = ppmi_svd_vectors(corpus, dim=50, min_count=3)  # dim above the vocabulary: dense SVD, 12-d
    assert small.dim == 12


def test_min_count_drops_rare_words() -> None:
    corpus = [["x", "y"], ["x", "y"], ["x", "z"]]
    wv = train_word_vectors(corpus, backend="ppmi-svd", dim=2, min_count=2)
    assert set(wv.words) == {"x", "y"}


def caption_pairs(n: int, seed: int) -> tuple[np.ndarray, list[list[str]]]:
    """8x8 one-channel images with a bright pixel at (colour, size) and captions naming both."""
    rng = np.random.default_rng(seed)
    colours = ["red", "blue", "green", "yellow", "black", "white"]
    sizes = ["small", "large", "tiny", "huge"]
    filler = ["the", "a", "bird", "has", "with", "and", "this", "is"]
    c, s = rng.integers(0, 6, n), rng.integers(0, 4, n)
    images = rng.normal(0, 1, (n, 1, 8, 8))
    images[np.arange(n), 0, c, s] += 3.0
    sentences = []
    for ci, si in zip(c, s):
        words = [colours[ci], sizes[si]] + [filler[j] for j in rng.integers(0, 8, 4)]
        rng.shuffle(words)
        sentences.append(words)
    return images, sentences


def test_evaluator_ground_truth_high_shuffled_zero_and_deterministic() -> None:
    train, test = caption_pairs(2000, seed=0), caption_pairs(800, seed=1)
    ev = CCAEvaluator(k=5, backend="ppmi-svd", dim=20, pca_components=32).fit(*train)
    gt = ev.ground_truth(*test)
    assert gt > 0.35
    assert ev.summary()["image_features"] == "pca-of-pixels" and ev.summary()["image_dim"] == 32
    perm = np.random.default_rng(2).permutation(800)
    assert abs(ev.score(test[0][perm], test[1])) < 0.05
    again = CCAEvaluator(k=5, backend="ppmi-svd", dim=20, pca_components=32).fit(*train)
    assert again.ground_truth(*test) == gt
    # pair scores are eq. 4 on the evaluator's own features
    f1, f2 = ev.features(*test)
    np.testing.assert_allclose(ev.pair_scores(*test), cosine_rows(*ev.cca.project(f1, f2)))


def test_evaluator_on_given_features_is_invariant_to_affine_maps() -> None:
    """Unit-variance CCA is invariant to invertible affine maps of a view, so is the score."""
    (images, sentences), (timages, tsentences) = caption_pairs(1500, seed=3), caption_pairs(500, seed=4)
    feats, tfeats = images.reshape(1500, -1), timages.reshape(500, -1)
    A = np.random.default_rng(5).standard_normal((64, 64)) + 4 * np.eye(64)
    ev = CCAEvaluator(k=4, backend="ppmi-svd", dim=16, ridge=0.0).fit(feats, sentences)
    mapped = CCAEvaluator(k=4, backend="ppmi-svd", dim=16, ridge=0.0).fit(feats @ A + 7.0, sentences)
    assert ev.summary()["image_features"] == "given"
    assert mapped.ground_truth(tfeats @ A + 7.0, tsentences) == pytest.approx(ev.ground_truth(tfeats, tsentences),
                                                                             abs=1e-6)


def test_evaluator_with_given_word_vectors() -> None:
    images, sentences = caption_pairs(600, seed=6)
    words = sorted({w for s in sentences for w in s})
    wv = WordVectors(tuple(words), np.random.default_rng(0).standard_normal((len(words), 12)))
    ev = CCAEvaluator(k=3, word_vectors=wv, pca_components=16).fit(images, sentences)
    assert ev.summary()["backend"] == "given" and ev.summary()["word_dim"] == 12
    assert ev.score(images, sentences) > 0.2


def test_gensim_backend_is_seeded() -> None:
    pytest.importorskip("gensim")
    corpus = topic_corpus(300, seed=1)
    a = train_word_vectors(corpus, backend="gensim", dim=8, epochs=2, seed=4)
    b = train_word_vectors(corpus, backend="gensim", dim=8, epochs=2, seed=4)
    assert a.backend == "gensim" and a.dim == 8 and a.words == b.words
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_clear_errors() -> None:
    X, Y = correlated_views(50, (0.5,), 3, 4, seed=0)
    with pytest.raises(ValueError, match="larger than the dimensions"):
        CCA(k=4).fit(X, Y)
    with pytest.raises(ValueError, match="training pairs"):
        CCA(k=3).fit(X[:3], Y[:3])
    with pytest.raises(ValueError, match="different numbers of rows"):
        CCA(k=2).fit(X, Y[:40])
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        CCA(k=2).fit(bad, Y)
    with pytest.raises(ValueError, match="zero variance"):
        CCA(k=2).fit(np.ones((50, 3)), Y)
    with pytest.raises(ValueError, match="k must be"):
        CCA(k=0)
    with pytest.raises(ValueError, match="scaling"):
        CCA(k=2, scaling="other")
    with pytest.raises(RuntimeError, match="fit"):
        CCA(k=2).project(X, Y)
    with pytest.raises(ValueError, match="fitted on 3 features"):
        CCA(k=2).fit(X, Y).project(Y, Y)
    with pytest.raises(ValueError, match="backend"):
        CCAEvaluator(backend="word2vec")
    with pytest.raises(ValueError, match="window must be a positive integer"):
        CCAEvaluator(window=0)
    with pytest.raises(ValueError, match="pca_components"):
        CCAEvaluator(pca_components=0)
    with pytest.raises(TypeError, match="list of words"):
        train_word_vectors(["a sentence as a string"], backend="ppmi-svd")
    with pytest.raises(ValueError, match="min_count"):
        train_word_vectors([["a", "b"]], backend="ppmi-svd")
    images, sentences = caption_pairs(300, seed=7)
    with pytest.raises(ValueError, match="300 training images"):
        CCAEvaluator(k=2, dim=8, backend="ppmi-svd").fit(images, sentences[:-1])
    nan_images = images.copy()
    nan_images[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        CCAEvaluator(k=2, dim=8, backend="ppmi-svd").fit(nan_images, sentences)
    ev = CCAEvaluator(k=2, dim=8, backend="ppmi-svd", pca_components=8)
    with pytest.raises(RuntimeError, match="fit"):
        ev.score(images, sentences)
    ev.fit(images, sentences)
    with pytest.raises(ValueError, match="images of shape"):
        ev.score(images.reshape(300, -1), sentences)

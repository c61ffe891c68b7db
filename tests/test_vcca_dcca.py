"""VCCA, VCCA-private, DCCA and the observed-only (M-) reference against independent answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from mmdgm import Batch
from mmdgm.batch import BatchError
from mmdgm.config import load_config
from mmdgm.data import MultimodalDataset
from mmdgm.evaluate import METRICS, EvalContext
from mmdgm.modalities import Modality
from mmdgm.models import MODELS
from mmdgm.models.dcca import NotGenerativeError, total_correlation
from tests.linear_gaussian import (
    DTYPE,
    GaussianEncoder,
    LinearDecoder,
    default_problem,
    exact_elbo,
    exact_log_moment,
)
from tests.zero_gradient import check_missing_modality_is_never_read

GAUSSIAN = dict(prior="normal", posterior="normal", posterior_scale="exp", prior_scale="free")
LOG_2PI = math.log(2 * math.pi)


def vector_modalities(dims=(6, 5), sigma: float = 0.5, hidden=(8,)) -> list[Modality]:
    return [
        Modality(n, (d,), kind="vector", likelihood="normal", likelihood_scale=sigma, encoder="mlp", decoder="mlp",
                 net_options={"hidden": list(hidden)})
        for n, d in zip("ab", dims)
    ]


def vector_batch(n: int = 6, dims=(6, 5), seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch({name: torch.randn(n, d, generator=g) for name, d in zip("ab", dims)})


def std_normal_kl(loc: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, exp(raw)) || N(0, I)) summed over the last axis, by the textbook formula."""
    return 0.5 * (raw.exp() + loc**2 - 1 - raw).sum(-1)


def normal_log_density(x: torch.Tensor, mean: torch.Tensor, sd) -> torch.Tensor:
    sd = torch.as_tensor(sd, dtype=mean.dtype)
    return (-0.5 * ((x - mean) / sd) ** 2 - torch.log(sd) - 0.5 * LOG_2PI).sum(-1)


# ---- VCCA on a linear-Gaussian model ------------------------------------------------------
class LinearEncoder(nn.Module):
    """(loc, log-variance) of the GaussianEncoder restricted to view a's coordinates."""

    def __init__(self, enc: GaussianEncoder, cols: slice) -> None:
        super().__init__()
        self.C, self.c, self.log_s = nn.Parameter(enc.C[:, cols].clone()), nn.Parameter(enc.c.clone()), enc.log_s

    def forward(self, x):
        loc = x @ self.C.T + self.c
        return loc, (2 * self.log_s).expand_as(loc)


def linear_vcca():
    """VCCA whose view a = the first 2 coordinates and view b = the last of the D=2, P=3
    linear-Gaussian problem, encoder q(z | x_a) (the problem's encoder with b's column
    zeroed), and the same problem as a LinearGaussian with that encoder."""
    lg, enc, x = default_problem()
    enc = GaussianEncoder(C=torch.cat([enc.C[:, :2], torch.zeros(2, 1, dtype=DTYPE)], 1), c=enc.c, log_s=enc.log_s)
    mods = [Modality("a", (2,), kind="vector", likelihood="normal", likelihood_scale=lg.sigma, encoder="mlp"),
            Modality("b", (1,), kind="vector", likelihood="normal", likelihood_scale=lg.sigma, encoder="mlp")]
    model = MODELS.get("vcca")(mods, 2, **GAUSSIAN, observed=["a"]).double()
    model.encoders["a"] = LinearEncoder(enc, slice(0, 2))
    model.decoders["a"] = LinearDecoder(lg.A[:2].clone(), lg.b[:2].clone())
    model.decoders["b"] = LinearDecoder(lg.A[2:].clone(), lg.b[2:].clone())
    return model, lg, enc, x, Batch({"a": x[:, :2], "b": x[:, 2:]})


def test_vcca_bound_matches_the_closed_form_elbo():
    model, lg, enc, x, batch = linear_vcca()
    torch.manual_seed(0)
    K = 200_000
    with torch.no_grad():
        t = model.terms(batch, K)
    q = enc(x)
    kl = 0.5 * (q.scale**2 + q.loc**2 - 1 - (q.scale**2).log()).sum(-1)
    torch.testing.assert_close(t.kl, kl, rtol=1e-12, atol=1e-12)
    assert t.kl_private.abs().max() == 0
    se = t.log_lik.std(0) / math.sqrt(K)
    assert ((t.elbo - exact_elbo(lg, enc, x)).abs() < 5 * se + 1e-9).all(), (t.elbo, exact_elbo(lg, enc, x), se)


def test_vcca_log_likelihood_converges_to_the_exact_marginal():
    model, lg, enc, x, batch = linear_vcca()
    torch.manual_seed(1)
    K = 200_000
    estimate = model.log_likelihood(batch, K=K, chunk=50_000)
    exact = lg.log_marginal(x)
    # relative standard error of the mean weight: sqrt(Var w / (E w)^2 / K), E w^2 in closed form
    rel_se = ((exact_log_moment(lg, enc, x, 2.0) - 2 * exact).exp() - 1).sqrt() / math.sqrt(K)
    assert ((estimate - exact).abs() < 5 * rel_se + 1e-9).all(), (estimate, exact, rel_se)


# ---- VCCA-private: the bound assembled by hand ------------------------------------------
def test_vcca_private_terms_and_log_weights_by_hand():
    torch.manual_seed(0)
    model = MODELS.get("vcca-private")(vector_modalities(), 3, **GAUSSIAN, private_dim=2)
    batch = vector_batch()
    batch.mask["b"] = torch.tensor([True, False, True, True, False, True])
    batch = batch.zero_missing()
    mask_b = batch.mask["b"]
    torch.manual_seed(5)
    t = model.terms(batch, 3)
    d = t.draws
    loc, raw = model.encoders["a"](batch.data["a"])
    torch.testing.assert_close(t.kl, std_normal_kl(loc, raw))
    kl_h = {n: std_normal_kl(*model.private_encoders[n](batch.data[n])) for n in "ab"}
    torch.testing.assert_close(t.kl_private, kl_h["a"] + torch.where(mask_b, kl_h["b"], torch.zeros_like(kl_h["b"])))
    lik = {n: normal_log_density(batch.data[n], model.decoders[n](torch.cat([d.z, d.h[n]], -1)), 0.5) for n in "ab"}
    torch.testing.assert_close(t.log_lik, lik["a"] + torch.where(mask_b, lik["b"], torch.zeros_like(lik["b"])))
    torch.testing.assert_close(t.elbo, t.log_lik.mean(0) - t.kl - t.kl_private)
    # the importance weights: log p(z) p(h) p(x | z, h) - log q(z | x_a) q(h | x)
    torch.manual_seed(5)
    lw, count = model.joint_log_weights(batch, 3)
    assert (count == 3).all()

    def log_ratio(h, enc_out):
        mean, logvar = enc_out
        return normal_log_density(h, torch.zeros_like(h), 1.0) - normal_log_density(h, mean, (0.5 * logvar).exp())

    private = {n: log_ratio(d.h[n], model.private_encoders[n](batch.data[n])) for n in "ab"}
    expected = (log_ratio(d.z, (loc, raw)) + lik["a"] + private["a"]
                + torch.where(mask_b, lik["b"] + private["b"], torch.zeros_like(lik["b"])))
    torch.testing.assert_close(lw, expected)


def test_forward_is_minus_the_mean_bound():
    for name, options in (("vcca", {}), ("vcca-private", {"private_dim": 2})):
        torch.manual_seed(0)
        model = MODELS.get(name)(vector_modalities(), 3, **GAUSSIAN, K=2, **options)
        batch = vector_batch()
        torch.manual_seed(7)
        out = model(batch)
        torch.manual_seed(7)
        torch.testing.assert_close(out.per_point, model.terms(batch, 2).elbo)
        torch.testing.assert_close(out.loss, -out.per_point.mean())


@pytest.mark.parametrize("name,options,silent", [("vcca", {}, ()), ("vcca-private", {"private_dim": 2}, ("private_encoders.b.",))])
def test_missing_view_is_never_read(name, options, silent):
    torch.manual_seed(0)
    model = MODELS.get(name)(vector_modalities(), 3, **GAUSSIAN, **options)
    check_missing_modality_is_never_read(model, vector_batch(), silent=silent)


def test_vcca_conditions_on_its_observed_view_only():
    torch.manual_seed(0)
    model = MODELS.get("vcca-private")(vector_modalities(), 3, **GAUSSIAN, observed=["b"], private_dim=2).eval()
    batch = vector_batch()
    assert model.inference_modalities == model.observed == ["b"] and list(model.encoders) == ["b"]
    loc, _ = model.encoders["b"](batch.data["b"])
    torch.testing.assert_close(model.encode(batch).mean, loc)
    torch.testing.assert_close(model.encode(batch, ["b"]).mean, loc)
    for names in (["a"], ["a", "b"]):
        with pytest.raises(BatchError, match="can condition on 'b' only"):
            model.encode(batch, names)
    with pytest.raises(BatchError, match="can condition on 'b' only"):
        model.cross_generate(batch, "a", "b")
    assert model.cross_generate(batch, "b", "a").shape == (6, 6)
    assert {k: v.shape for k, v in model.reconstruct(batch).items()} == {"a": (6, 6), "b": (6, 5)}
    assert model.sample(4)["a"].shape == (4, 6)
    partial = Batch(batch.data, {"b": torch.tensor([True, False, True, True, True, True])})
    for call in (lambda: model(partial), lambda: model.encode(partial), lambda: model.log_likelihood(partial, 2)):
        with pytest.raises(BatchError, match=r"infers z from 'b', which samples \[1\] lack"):
            call()


def test_vcca_bad_options_are_clear_errors():
    mods = vector_modalities()
    with pytest.raises(ValueError, match="did you mean 'a'"):
        MODELS.get("vcca")(mods, 3, **GAUSSIAN, observed=["aa"])
    for observed in ("a", ["a", "b"], []):
        with pytest.raises(ValueError, match="observed must be a list of one modality name"):
            MODELS.get("vcca")(mods, 3, **GAUSSIAN, observed=observed)
    with pytest.raises(ValueError, match="prior: normal and posterior: normal"):
        MODELS.get("vcca")(mods, 3, prior="laplace", posterior="laplace")
    with pytest.raises(ValueError, match="K must be >= 1"):
        MODELS.get("vcca")(mods, 3, **GAUSSIAN, K=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        MODELS.get("vcca")(mods, 3, **GAUSSIAN, dropout=1.0)
    with pytest.raises(ValueError, match="private_dim must be >= 1"):
        MODELS.get("vcca-private")(mods, 3, **GAUSSIAN, private_dim=0)


# ---- DCCA -------------------------------------------------------------------------------
def canonical_correlations_qr(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Sample canonical correlations without regularisation (Björck & Golub 1973): the
    singular values of Q1^T Q2, Q_i orthonormal bases of the centred data."""
    q1, _ = np.linalg.qr(x1 - x1.mean(0))
    q2, _ = np.linalg.qr(x2 - x2.mean(0))
    return np.linalg.svd(q1.T @ q2, compute_uv=False)


def canonical_correlations_ridge(x1: np.ndarray, x2: np.ndarray, r1: float, r2: float) -> np.ndarray:
    """Regularised canonical correlations from the generalised eigenproblem
    S12 S22^-1 S21 a = rho^2 S11 a (scipy), descending."""
    m = len(x1)
    a, b = x1 - x1.mean(0), x2 - x2.mean(0)
    s11 = a.T @ a / (m - 1) + r1 * np.eye(a.shape[1])
    s22 = b.T @ b / (m - 1) + r2 * np.eye(b.shape[1])
    s12 = a.T @ b / (m - 1)
    values = scipy.linalg.eigh(s12 @ np.linalg.solve(s22, s12.T), s11, eigvals_only=True)
    return np.sqrt(np.clip(values, 0, None))[::-1]


def correlated_views(n: int, rho=(0.9, 0.6, 0.3), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x1 = u M1 (3-d), x2 = [v, noise] M2 (4-d), corr(u_i, v_i) = rho_i, all else
    independent: the population canonical correlations are rho (invariant to M1, M2)."""
    g = torch.Generator().manual_seed(seed)
    rho = torch.tensor(rho, dtype=DTYPE)
    u = torch.randn(n, 3, generator=g, dtype=DTYPE)
    v = rho * u + (1 - rho**2).sqrt() * torch.randn(n, 3, generator=g, dtype=DTYPE)
    x2 = torch.cat([v, torch.randn(n, 1, generator=g, dtype=DTYPE)], 1)
    m1 = torch.randn(3, 3, generator=g, dtype=DTYPE) + 2 * torch.eye(3, dtype=DTYPE)
    m2 = torch.randn(4, 4, generator=g, dtype=DTYPE) + 2 * torch.eye(4, dtype=DTYPE)
    return u @ m1, x2 @ m2


def test_total_correlation_matches_independent_cca():
    x1, x2 = correlated_views(300)
    plain = canonical_correlations_qr(x1.numpy(), x2.numpy())
    ridge = canonical_correlations_ridge(x1.numpy(), x2.numpy(), 0.3, 0.1)
    for k in (1, 2, 3, None):
        assert float(total_correlation(x1, x2, 0.0, 0.0, k)) == pytest.approx(plain[:k].sum(), abs=1e-9)
        assert float(total_correlation(x1, x2, 0.3, 0.1, k)) == pytest.approx(ridge[:k].sum(), abs=1e-9)
    assert ridge.sum() < plain.sum()  # the ridge shrinks the correlations


def test_total_correlation_recovers_known_canonical_correlations():
    x1, x2 = correlated_views(40_000, seed=1)
    assert float(total_correlation(x1, x2, 1e-8, 1e-8)) == pytest.approx(1.8, abs=0.03)
    assert float(total_correlation(x1, x2, 1e-8, 1e-8, 1)) == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize("k", [None, 1])
def test_total_correlation_gradcheck(k):
    g = torch.Generator().manual_seed(3)
    h1 = torch.randn(9, 3, generator=g, dtype=DTYPE, requires_grad=True)
    h2 = torch.randn(9, 2, generator=g, dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: total_correlation(a, b, 0.1, 0.2, k), (h1, h2))


def linear_dcca(r: float = 1e-6) -> nn.Module:
    """DCCA on vector views a (3-d), b (4-d) whose networks are linear maps to o = 3."""
    mods = [Modality(n, (d,), kind="vector", encoder="mlp", net_options={"hidden": []}) for n, d in (("a", 3), ("b", 4))]
    return MODELS.get("dcca")(mods, 3, r1=r, r2=r).double()


def test_dcca_loss_is_minus_the_total_correlation_of_the_projections():
    torch.manual_seed(0)
    model = linear_dcca()
    x1, x2 = correlated_views(200)
    with torch.no_grad():
        model.encoders["a"].loc.weight.copy_(torch.eye(3, dtype=DTYPE))
    out = model(Batch({"a": x1, "b": x2}))
    f, g = model.project("a", x1), model.project("b", x2)
    torch.testing.assert_close(f, x1 + model.encoders["a"].loc.bias)
    torch.testing.assert_close(out.loss, -total_correlation(f, g, 1e-6, 1e-6))
    # f is the identity on view a, g a generic linear map of rank 3: the loss is minus
    # the (nearly unregularised) CCA between view a and the 3-d projection of view b
    expected = canonical_correlations_qr(x1.numpy(), g.detach().numpy()).sum()
    assert out.metrics["correlation"] == pytest.approx(expected, abs=1e-5)
    torch.testing.assert_close(model.encode(Batch({"a": x1, "b": x2}), ["a"]).mean, f)
    joint = model.encode(Batch({"a": x1, "b": x2})).sample()
    torch.testing.assert_close(joint, torch.cat([f, g], -1))


def test_dcca_skips_incomplete_rows_and_never_reads_them():
    torch.manual_seed(0)
    model = linear_dcca(1e-3)
    x1, x2 = correlated_views(12)
    missing = torch.tensor([True, False, False] * 4)
    grads = []
    for fill in (0.0, float("nan")):
        model.zero_grad()
        b = torch.where(missing[:, None], torch.full_like(x2, fill), x2)
        out = model(Batch({"a": x1, "b": b}, {"b": ~missing}))
        out.loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    complete = model(Batch({"a": x1[~missing], "b": x2[~missing]}))
    assert float(out.loss.detach()) == pytest.approx(float(complete.loss.detach()), abs=1e-12)
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=0, atol=0)
        assert torch.isfinite(grads[0][k]).all()
    only_one = torch.tensor([False] + [True] * 11)
    with pytest.raises(BatchError, match="at least 2 rows observing both views"):
        model(Batch({"a": x1, "b": x2}, {"b": ~only_one}))
    with pytest.raises(BatchError, match="lack 'b'"):
        model.encode(Batch({"a": x1, "b": x2}, {"b": ~missing}), ["b"])


def test_dcca_is_not_generative_and_checks_its_options():
    model = linear_dcca()
    batch = Batch({"a": torch.zeros(4, 3, dtype=DTYPE), "b": torch.zeros(4, 4, dtype=DTYPE)})
    assert not model.generative and model.picture_grids(batch, ["a"], 2) == {}
    for call in (lambda: model.sample(2), lambda: model.cross_generate(batch, "a", "b"), lambda: model.reconstruct(batch),
                 lambda: model.log_likelihood(batch), lambda: model.bound(batch, 2), lambda: model.decode(torch.zeros(2, 3)),
                 lambda: model.latent_kl_pairs(batch)):
        with pytest.raises(NotGenerativeError, match="DCCA .* is not a generative model"):
            call()
    mods = [Modality(n, (3,), kind="vector") for n in "abc"]
    with pytest.raises(ValueError, match="exactly two views"):
        MODELS.get("dcca")(mods, 3)
    with pytest.raises(ValueError, match="r1, r2 must be > 0"):
        MODELS.get("dcca")(mods[:2], 3, r1=0.0)
    with pytest.raises(ValueError, match=r"k must be in \[1, latent_dim=3\]"):
        MODELS.get("dcca")(mods[:2], 3, k=4)


# ---- the M- reference -----------------------------------------------------------------------
def labelled_vectors(split: str, informative: bool) -> MultimodalDataset:
    """View a carries the class (one-hot plus noise) when `informative`, else pure noise; view b is noise."""
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = 300
    labels = torch.arange(n) % 3
    a = torch.randn(n, 6, generator=g) * 0.1
    if informative:
        a[:, :3] += nn.functional.one_hot(labels, 3)
    return MultimodalDataset({"a": a, "b": torch.randn(n, 5, generator=g)}, labels, name="labelled-vectors")


@pytest.mark.parametrize("classifier", ["mlp", "logistic"])
def test_observed_only_classifier_reads_the_observed_view(classifier, tmp_path):
    model = MODELS.get("vcca")(vector_modalities(), 3, **GAUSSIAN)
    results = {}
    for informative in (True, False):
        ctx = EvalContext(model, labelled_vectors("test", informative), labelled_vectors("train", informative),
                          out_dir=tmp_path, progress=False)
        results[informative] = METRICS.get("observed_only_classifier")(ctx, classifier=classifier, epochs=30, lr=1e-2)
    assert results[True]["a"] == 0.0 and results[True]["classifier"] == classifier
    assert results[False]["a"] > 0.45  # chance is 2/3
    assert results[True]["n_train"] == 300 and results[True]["n_test"] == 300
    with pytest.raises(ValueError, match="did you mean 'a'"):
        METRICS.get("observed_only_classifier")(ctx, observed=["aa"])


# ---- end to end through the config path -----------------------------------------------------
TINY = ["data.options={source: synthetic, n_train: 120, n_test: 60}", "train.epochs=1", "train.batch_size=40",
        "train.eval_batches=1", "train.grid_size=3", "train.log_every=1",
        "model.modalities.view1.net_options.hidden=[16]", "model.modalities.view2.net_options.hidden=[16]"]


@pytest.mark.parametrize("config,extra", [("vcca-default", []), ("vcca-default", ["model.name=vcca-private",
                                          "model.options.private_dim=3"]), ("dcca-default", ["model.latent_dim=4"])])
def test_tiny_training_through_the_config_path(config, extra, tmp_path, capsys):
    from mmdgm import run
    from mmdgm.cli import main

    cfg = load_config(config, TINY + extra)
    run_dir = run.train(cfg, tmp_path / "r")
    results = json.loads((run_dir / "eval.json").read_text())
    assert 0.0 <= results["downstream_classification"]["view1"] <= 1.0
    assert 0.0 <= results["observed_only_classifier"]["view1"] <= 1.0
    grids = sorted(p.name for p in (run_dir / "grids").glob("*.png"))
    if cfg.model.name == "dcca":
        assert grids == [] and set(results["downstream_classification"]) >= {"view1", "view2", "view1+view2"}
        assert main(["sample", str(run_dir)]) == 2
        assert "is not a generative model" in capsys.readouterr().err
    else:
        assert grids == ["epoch001-from-view1.png", "epoch001-joint.png"]
        assert "view2" not in results["downstream_classification"]
        from mmdgm.evaluate.runner import evaluate_run

        more = evaluate_run(run_dir, ["latent_kl", "latent_traversals", "latent_accuracy", "posterior_collapse",
                                      "missing_rmse"], progress=False)
        assert list(more["latent_kl"]["kl_to_prior"]) == ["view1"] and list(more["latent_accuracy"])[0] == "view1"
        assert "joint" not in more["latent_accuracy"] and more["missing_rmse"]["observed"] == ["view1"]
        private = ["q(h|view1) || p(h)", "q(h|view2) || p(h)"] if cfg.model.name == "vcca-private" else []
        assert list(more["posterior_collapse"]["collapse"]) == ["q(z|view1) || p(z)", *private]

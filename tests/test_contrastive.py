"""The contrastive objective ("Relating by contrasting" eq. 4/12-14) against brute force:
the loss, the re-pairing, gradient flow into every model, stability, configs."""

from __future__ import annotations

import math

import pytest
import torch

from mmdgm import Batch, Modality
from mmdgm.batch import repaired_batch
from mmdgm.config import ConfigError, load_config
from mmdgm.models import MODELS
from mmdgm.models.base import MultimodalVAE, pooled_bound
from mmdgm.models.contrastive import anchored_indices, contrastive_class, repaired_indices
from mmdgm.models.factory import build_model

GAUSSIAN = {"prior": "normal", "posterior": "normal", "posterior_scale": "exp", "prior_scale": "free"}
MODEL_NAMES = ["mmvae", "mvae", "jmvae", "mopoe", "mmjsd"]


def vector_model(name, names=("a", "b", "c"), contrastive=None, **options):
    mods = [Modality(n, (5,), kind="vector", net_options={"hidden": [8]}) for n in names]
    dists = {} if name == "mmvae" else GAUSSIAN
    return contrastive_class(MODELS.get(name))(mods, 3, contrastive=contrastive, **dists, **options)


def vector_batch(names=("a", "b", "c"), n=7, seed=0, missing=()):
    g = torch.Generator().manual_seed(seed)
    data = {k: torch.randn(n, 5, generator=g) for k in names}
    mask = {k: torch.ones(n, dtype=torch.bool) for k in names}
    for name, row in missing:
        mask[name][row] = False
    return Batch(data, mask)


def tuple_bounds(model, bound):
    """A `repaired_bounds` that applies `bound` to the re-paired tuples as one batch."""
    return lambda batch, J, K, estimator: bound(repaired_batch(batch, model.names, J), K, estimator)


def run_recorded(monkeypatch, model, batch, base: str, indices: str, bound, seed: int):
    """The contrastive forward with the tuples' bound replaced by `bound` and every index
    matrix that `mmdgm.models.contrastive.<indices>` draws recorded (positions among the
    complete rows); also the base model's per-point objective from the same random state.
    Returns (output, objective, recorded matrices)."""
    import mmdgm.models.contrastive as contrastive

    draw, recorded = getattr(contrastive, indices), []

    def record(*args):
        recorded.append(draw(*args))
        return recorded[-1]

    monkeypatch.setattr(model, "repaired_bounds", tuple_bounds(model, bound))
    monkeypatch.setattr(contrastive, indices, record)
    torch.manual_seed(seed)
    out = model(batch)
    torch.manual_seed(seed)
    return out, MODELS.get(base).forward(model, batch).per_point.detach(), recorded


def test_repaired_loss_equals_brute_force_with_a_known_bound(monkeypatch):
    """Eq. 14: -gamma * objective_i + log sum_n exp bound(tuple), recomputed by loops over
    the recorded index matrix, with a deterministic bound; an incomplete row takes term 1 only."""
    model = vector_model("mmvae", contrastive={"gamma": 1.7, "n_negatives": 4, "negatives": "repaired"}, K=2)
    batch = vector_batch(missing=[("b", 2)])

    def bound(b, K, estimator):
        return -sum((x.double() ** 2).sum(-1) for x in b.data.values()).float() / 10

    out, objective, recorded = run_recorded(monkeypatch, model, batch, "mmvae", "repaired_indices", bound, 3)
    (J,) = recorded
    complete = [r for r in range(batch.size) if r != 2]
    assert J.shape == (3, 4, 6) and set(J.unique().tolist()) <= set(range(6))
    want = []
    for i in range(batch.size):
        total = -1.7 * objective[i].item()
        if i != 2:
            anchor = complete.index(i)
            tuples = [[complete[int(J[m, n, anchor])] for m in range(3)] for n in range(4)]
            values = [-sum(float((batch.data[k][r].double() ** 2).sum()) for k, r in zip("abc", t)) / 10 for t in tuples]
            top = max(values)
            total += top + math.log(sum(math.exp(v - top) for v in values))
        want.append(total)
    assert out.loss.item() == pytest.approx(sum(want) / len(want), rel=1e-5)
    assert out.per_point.shape == (batch.size,)


def test_negatives_never_pair_an_item_with_its_partner_and_cover_all_others():
    torch.manual_seed(0)
    rows = torch.tensor([4, 9, 11])
    J = repaired_indices(rows, 2, 2000)
    assert (J[0] != J[1]).all() and set(J.unique().tolist()) == {4, 9, 11}
    pairs = {(int(a), int(b)) for a, b in zip(J[0].flatten(), J[1].flatten())}
    assert pairs == {(a, b) for a in (4, 9, 11) for b in (4, 9, 11) if a != b}
    J3 = repaired_indices(torch.arange(3), 3, 500)
    assert all(len(set(J3[:, n, i].tolist())) == 3 for n in range(500) for i in range(3))
    with pytest.raises(ValueError, match="at least 3 complete rows"):
        repaired_indices(torch.arange(2), 3, 1)


def test_too_few_complete_rows_take_term_one_only():
    model = vector_model("mvae", names=("a", "b"))
    batch = vector_batch(names=("a", "b"), n=3, missing=[("a", 0), ("b", 1)])
    torch.manual_seed(0)
    out = model(batch)
    torch.manual_seed(0)
    base = MODELS.get("mvae").forward(model, batch)
    assert out.loss.item() == pytest.approx(-2.0 * base.per_point.mean().item())
    assert out.metrics["contrastive_term"] == 0.0 and "negative_bound" not in out.metrics


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("estimator", ["iwae", "cubo"])
def test_gradients_reach_every_network_through_both_terms(name, estimator):
    """Term 2 alone has gradients in every decoder and in the encoders of the joint
    posterior (JMVAE's joint encoder on complete rows, every unimodal one elsewhere); the
    full loss is finite and reaches every network."""
    torch.manual_seed(0)
    model = vector_model(name, contrastive={"estimator": estimator, "n_negatives": 3}, K=2) if name != "jmvae" \
        else vector_model(name, contrastive={"estimator": estimator, "n_negatives": 3})
    batch = vector_batch()
    term, bounds = model.negative_term(batch)
    assert bounds.shape == (3 * 3 * batch.size,) and torch.isfinite(term).all()  # anchored: M * N per row
    term.sum().backward()
    joint = {"joint": model.joint} if name == "jmvae" else dict(model.encoders)
    for key, net in {**joint, **{f"decoder {k}": v for k, v in model.decoders.items()}}.items():
        assert grad_size(net) > 0, f"{name}: no term-2 gradient in {key}"
    model.zero_grad()
    loss = model(batch).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for key, net in [*model.encoders.items(), *model.decoders.items()]:
        assert grad_size(net) > 0, f"{name}: no gradient in {key}"


def grad_size(net):
    return sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("negatives", ["repaired", "anchored"])
def test_large_bounds_stay_finite(monkeypatch, negatives):
    """Bounds of +-3e4 nats: term 2 is their log-sum-exp, finite (~ the largest per row)."""
    model = vector_model("mmvae", contrastive={"negatives": negatives}, K=2)
    bounds = {}

    def bound(b, K, e):
        bounds["v"] = torch.linspace(-3e4, 3e4, b.size, requires_grad=True)
        return bounds["v"]

    monkeypatch.setattr(model, "repaired_bounds", tuple_bounds(model, bound))
    out = model(vector_batch(n=6))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(bounds["v"].grad).all()
    assert out.metrics["contrastive_term"] > 5e3


def test_pooled_bound_iwae_and_cubo_against_direct_formulas():
    lw = torch.tensor([[-1.0, 200.0], [0.5, 201.0], [torch.finfo(torch.float64).min, 199.0]], dtype=torch.float64)
    count = torch.tensor([2, 3])
    iw, cu = pooled_bound(lw, count, "iwae"), pooled_bound(lw, count, "cubo")
    assert iw[0].item() == pytest.approx(math.log((math.exp(-1) + math.exp(0.5)) / 2), rel=1e-6)
    assert cu[0].item() == pytest.approx(0.5 * math.log((math.exp(-2) + math.exp(1)) / 2), rel=1e-6)
    assert iw[1].item() == pytest.approx(200 + math.log((1 + math.e + math.exp(-1)) / 3), rel=1e-6)
    assert (cu >= iw).all()
    with pytest.raises(ValueError, match="did you mean 'cubo'"):
        pooled_bound(lw, count, "cubbo")


def test_bound_of_a_single_draw_is_its_log_weight():
    """With K=1 and a single-proposal model, iwae and cubo both equal the one log-weight."""
    model = vector_model("jmvae", names=("a", "b"))
    batch = vector_batch(names=("a", "b"))
    torch.manual_seed(5)
    lw, count = model.joint_log_weights(batch, 1)
    torch.manual_seed(5)
    iw = model.bound(batch, 1, "iwae")
    torch.manual_seed(5)
    cu = model.bound(batch, 1, "cubo")
    assert torch.equal(count, torch.ones(batch.size, dtype=count.dtype))
    torch.testing.assert_close(iw, lw[0]) and torch.testing.assert_close(cu, lw[0])


SHAPES = {"mnist": (1, 28, 28), "synth_hand": (1, 28, 28), "synth_street": (3, 32, 32)}


@pytest.mark.parametrize("name", ["ci-mmvae", "cc-mmvae", "ci-mvae", "cc-mvae", "ci-jmvae", "cc-jmvae"])
@pytest.mark.parametrize("setting", ["default", "mnist-synthstreet"])
def test_builtin_contrastive_configs(name, setting):
    cfg = load_config(f"{name}-{setting}")
    model_name = name[3:]
    base = load_config("mmvae-synthetic-pairs" if (model_name, setting) == ("mmvae", "default") else f"{model_name}-{setting}")
    assert cfg.model.contrastive.estimator == ("iwae" if name.startswith("ci") else "cubo")
    assert (cfg.model.contrastive.gamma, cfg.model.contrastive.n_negatives) == (2.0, 5)
    no_annealing = {"annealing_steps": 0} if model_name == "mvae" else {}
    assert cfg.model.modalities == base.model.modalities and cfg.model.options == {**base.model.options, **no_annealing}
    model = build_model(cfg.model, {m: SHAPES[m] for m in cfg.model.modalities})
    assert isinstance(model, MODELS.get(cfg.model.name)) and type(model).__name__.startswith("Contrastive")


def test_contrastive_from_overrides_and_bad_values():
    cfg = load_config("mopoe-default", ["model.contrastive.estimator=cubo", "model.contrastive.K=4"])
    model = build_model(cfg.model, {m: SHAPES[m] for m in cfg.model.modalities})
    assert (model.contrastive_estimator, model.contrastive_K, model.gamma) == ("cubo", 4, 2.0)
    with pytest.raises(ConfigError, match=r"model.contrastive.gamma must be >= 1"):
        load_config("mvae-default", ["model.contrastive.gamma=0.5"])
    with pytest.raises(ConfigError, match="model.contrastive.negative .*did you mean 'negatives'"):
        load_config("mvae-default", ["model.contrastive.negative=3"])
    cfg = load_config("mvae-default", ["model.contrastive.negatives=mixed"])
    with pytest.raises(ValueError, match="unknown contrastive negatives 'mixed'"):
        build_model(cfg.model, {m: SHAPES[m] for m in cfg.model.modalities})
    cfg = load_config("mvae-default", ["model.contrastive.estimator=elbo"])
    with pytest.raises(ValueError, match="unknown contrastive estimator 'elbo'"):
        build_model(cfg.model, {m: SHAPES[m] for m in cfg.model.modalities})


def test_config_base_chain(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: mvae-default\ntrain: {epochs: 3}\nmodel: {options: {K: 4}}\n")
    cfg, base = load_config(str(child)), load_config("mvae-default")
    assert cfg.name == "child" and cfg.train.epochs == 3 and cfg.model.options["K"] == 4
    assert cfg.model.options["annealing_steps"] == base.model.options["annealing_steps"]
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="circular base chain"):
        load_config(str(loop))


def test_contrastive_null_in_a_saved_config_stays_off(tmp_path):
    """config.yaml of a plain run holds `contrastive: null`; reading it back must not
    turn the objective on (an optional section's None is not an empty section)."""
    path = tmp_path / "run.yaml"
    path.write_text("model: {name: mvae, contrastive: null}\n")
    assert load_config(str(path)).model.contrastive is None
    path.write_text("model: {name: mvae, contrastive: {}}\n")
    assert load_config(str(path)).model.contrastive.estimator == "iwae"


def test_anchored_loss_is_eq4_by_brute_force(monkeypatch):
    """Eq. 4 for M = 2: -gamma * objective_i + (1/2)(log sum_n exp bound(x', y_i) +
    log sum_n exp bound(x_i, y')), by loops over the recorded replacements."""
    model = vector_model("mvae", names=("a", "b"), contrastive={"gamma": 2.5, "n_negatives": 3})
    batch = vector_batch(names=("a", "b"), n=5)

    def bound(b, K, estimator):
        return (b.data["a"] * b.data["b"]).sum(-1)

    out, objective, recorded = run_recorded(monkeypatch, model, batch, "mvae", "anchored_indices", bound, 1)
    Ja, Jb = recorded
    want = eq3 = 0.0
    for i in range(5):
        terms = []
        for J, replaced in ((Ja, 0), (Jb, 1)):
            values = []
            for n in range(3):
                ra, rb = int(J[0, n, i]), int(J[1, n, i])
                assert (ra, rb)[1 - replaced] == i and (ra, rb)[replaced] != i
                values.append(float((batch.data["a"][ra].double() * batch.data["b"][rb].double()).sum()))
            top = max(values)
            terms.append(top + math.log(sum(math.exp(v - top) for v in values)))
        want += -2.5 * objective[i].item() + sum(terms) / 2
        eq3 += -objective[i].item() + sum(terms) / 2
    assert out.loss.item() == pytest.approx(want / 5, rel=1e-5)
    assert out.metrics["contrastive_loss"] == pytest.approx(eq3 / 5, rel=1e-5)


def test_anchored_replacements_cover_every_other_row():
    torch.manual_seed(0)
    rows = torch.tensor([2, 5, 7, 8])
    J = anchored_indices(rows, 3, 3000, replaced=1)
    assert torch.equal(J[0], rows.expand(3000, -1)) and torch.equal(J[2], rows.expand(3000, -1))
    assert (J[1] != J[0]).all() and set(J[1, :, 0].tolist()) == {5, 7, 8}


def test_a_model_whose_objective_is_no_bound_is_refused():
    """MVAE's KL annealing (beta < 1) leaves term 1 free of the KL while term 2's bound keeps
    it; training then diverged by step 15, so the pairing is a clear error."""
    mods = [Modality(n, (5,), kind="vector", net_options={"hidden": [8]}) for n in ("a", "b")]
    assert not MODELS.get("mvae")(mods, 3, annealing_steps=10, **GAUSSIAN).objective_is_bound()
    assert MODELS.get("mvae")(mods, 3, annealing_steps=0, **GAUSSIAN).objective_is_bound()
    with pytest.raises(ValueError, match="annealing_steps=0"):
        vector_model("mvae", contrastive={"estimator": "iwae"}, annealing_steps=10)
    vector_model("mvae", contrastive={"estimator": "iwae"}, annealing_steps=0)


def mixed_pairings(n: int, anchored: int, replaced: int) -> torch.Tensor:
    """Index matrix (3, 2 + anchored, n): two re-paired tuples and `anchored` anchored ones per row."""
    return torch.cat([repaired_indices(torch.arange(n), 3, 2), anchored_indices(torch.arange(n), 3, anchored, replaced)], 1)


def test_mmvae_repaired_bounds_are_each_tuples_tight_bound_on_shared_draws():
    """MMVAE's shared-draw `repaired_bounds` against loops over each tuple: its strata's
    draws are those of the rows it takes each modality from, its log-weights eq. (3) with
    its own mixture; under the identity pairing it is `bound` of the batch, draw for draw."""
    model = vector_model("mmvae", K=3)
    batch = vector_batch(n=5)
    J = mixed_pairings(5, anchored=2, replaced=1)
    for estimator in ("iwae", "cubo"):
        torch.manual_seed(4)
        got = model.repaired_bounds(batch, J, 3, estimator)
        torch.manual_seed(4)
        experts = model.encode(batch).experts
        base = torch.stack([e.rsample((3,)) for e in experts]).double()
        names = model.names
        want = []
        for t in range(J.shape[1] * J.shape[2]):
            rows = [int(J[m].reshape(-1)[t]) for m in range(3)]
            lw = []
            for r in range(3):
                for k in range(3):
                    z = base[r, k, rows[r]]
                    total = model.prior().log_prob(z.float()).double().sum()
                    for d, name in enumerate(names):
                        lik = model.likelihood(name, z.float()[None])
                        total += model.modalities[name].llik_scale * lik.log_prob_sum(batch.data[name][rows[d]][None], 1)[0].double()
                    q = [type(e)(e.loc[rows[m]].double(), e.scale[rows[m]].double()).log_prob(z).sum() for m, e in enumerate(experts)]
                    lw.append(total - (torch.logsumexp(torch.stack(q), 0) - math.log(3)))
            lw = torch.stack(lw)
            want.append(torch.logsumexp(lw, 0) - math.log(9) if estimator == "iwae" else (torch.logsumexp(2 * lw, 0) - math.log(9)) / 2)
        torch.testing.assert_close(got.double(), torch.stack(want).detach(), rtol=1e-5, atol=1e-4)
    identity = torch.arange(5).expand(3, 1, 5)
    torch.manual_seed(9)
    paired = model.repaired_bounds(batch, identity, 3, "cubo")
    torch.manual_seed(9)
    torch.testing.assert_close(paired, model.bound(batch, 3, "cubo"))
    with pytest.raises(ValueError, match="every modality observed"):
        model.repaired_bounds(vector_batch(n=5, missing=[("a", 1)]), J, 3)


@pytest.mark.parametrize("name", ["mvae", "jmvae", "mopoe", "mmjsd"])
def test_repaired_bounds_that_encode_rows_once_equal_the_default_draw_for_draw(name):
    """MVAE, MoPoE and mmJSD (unimodal experts) and JMVAE (joint-encoder features) encode
    each row once and gather every tuple's: the same bounds, from the same draws, as the
    default (`bound` of the re-paired tuples as one batch), and gradients flow to the
    encoders."""
    options = {"mvae": {"annealing_steps": 0, "K": 3}, "mopoe": {"K": 3}, "mmjsd": {"K": 3}}
    model = vector_model(name, **options.get(name, {}))
    batch = vector_batch(n=6)
    J = mixed_pairings(6, anchored=3, replaced=2)
    encoder = model.joint if name == "jmvae" else model.encoders
    for estimator in ("iwae", "cubo"):
        torch.manual_seed(2)
        got = model.repaired_bounds(batch, J, 3, estimator)
        torch.manual_seed(2)
        want = MultimodalVAE.repaired_bounds(model, batch, J, 3, estimator)
        assert got.shape == (5 * 6,)
        torch.testing.assert_close(got, want)
        model.zero_grad()
        got.sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    with pytest.raises(ValueError, match="every modality observed"):
        model.repaired_bounds(vector_batch(n=6, missing=[("c", 0)]), J, 3)

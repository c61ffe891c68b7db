"""MMALI (Chen & Zhu 2022): eq. 7/10 against brute force on discrete tables, the
discriminator losses against oracle discriminators, spectral norm, partial observation,
the geometric-mean posterior, M = 3."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from mmdgm import Batch
from mmdgm.config import ModelConfig, build
from mmdgm.models.factory import build_model
from mmdgm.models.mmali import geometric_mean_of_gaussians, joint_logits, non_saturating
from mmdgm.nets.discriminators import DotProductCritic, XZDiscriminator, conv_features
from tests.zero_gradient import check_missing_modality_is_never_read, grads


def tiny(names=("a", "b"), dims=(5, 3, 4), latent_dim=4, style_dim=2, **options):
    cfg = build(ModelConfig, {
        "name": "mmali", "latent_dim": latent_dim, "prior": "normal", "posterior": "normal",
        "posterior_scale": "exp", "prior_scale": "free", "learn_prior": False,
        "options": {"style_dim": style_dim, "disc_features": 8, "disc_hidden": 16, "disc_x_hidden": 16, **options},
        "modalities": {n: {"encoder": "mlp", "decoder": "mlp", "net_options": {"hidden": [16]}} for n in names},
    })
    torch.manual_seed(0)
    return build_model(cfg, {n: (d,) for n, d in zip(names, dims)})


def random_batch(model, B=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Batch({n: torch.randn(B, *m.shape, generator=g) for n, m in model.modalities.items()})


def normalised(*shape, g):
    t = torch.rand(*shape, generator=g, dtype=torch.float64) + 0.1
    return t / t.sum(-1, keepdim=True)


# --- eq. 5-7 and 10 by brute force -------------------------------------------------


def test_joint_logits_are_eq5_for_the_model_of_eq7_three_modalities():
    """Discrete q(X), q(z | x_m), p(z), p(x_m | z): softmax(joint_logits(a, b, t)) is the
    optimal joint discriminator of eq. 5 at every (x_1, x_2, x_3, z)."""
    g = torch.Generator().manual_seed(0)
    M, nx, nz = 3, 2, 3
    qX = normalised(nx**M, g=g).reshape(nx, nx, nx)
    q_z = [normalised(nx, nz, g=g) for _ in range(M)]
    p_z = normalised(nz, g=g)
    p_x = [normalised(nz, nx, g=g) for _ in range(M)]
    q_marg = [qX.sum((1, 2)), qX.sum((0, 2)), qX.sum((0, 1))]
    for *x, z in itertools.product(range(nx), range(nx), range(nx), range(nz)):
        p = p_z[z] * math.prod(p_x[m][z, x[m]] for m in range(M))
        q = [qX[tuple(x)] * q_z[i][x[i], z] for i in range(M)]
        expected = torch.tensor([*q, p]) / (p + sum(q))  # eq. 5
        a = torch.tensor([[math.log(q_marg[m][x[m]] * q_z[m][x[m], z] / (p_z[z] * p_x[m][z, x[m]]))] for m in range(M)])
        b = torch.tensor([[math.log(q_z[m][x[m], z] / p_z[z])] for m in range(M)])
        t = torch.tensor([math.log(qX[tuple(x)] / math.prod(q_marg[m][x[m]] for m in range(M)))])
        got = torch.softmax(joint_logits(a, b, t), -1)[0]
        torch.testing.assert_close(got, expected.to(got.dtype), rtol=1e-5, atol=1e-7)


def test_joint_logits_are_eq5_for_the_style_content_model_of_eq10():
    """Eq. 8/9 with binary x_m, s_m, c (M = 2): eq. 10's assembly equals eq. 5 everywhere."""
    g = torch.Generator().manual_seed(1)
    qX = normalised(4, g=g).reshape(2, 2)
    q_c = [normalised(2, 2, g=g) for _ in range(2)]  # q(c | x_m)
    q_s = [normalised(2, 2, g=g) for _ in range(2)]  # q(s_m | x_m)
    p_c, p_s = normalised(2, g=g), [normalised(2, g=g) for _ in range(2)]
    p_x = [normalised(2, 2, 2, g=g) for _ in range(2)]  # p(x_m | s_m, c) indexed [s, c, x]
    q_marg = [qX.sum(1), qX.sum(0)]
    for x1, x2, s1, s2, c in itertools.product(range(2), repeat=5):
        x, s = (x1, x2), (s1, s2)
        p = p_c[c] * math.prod(p_s[m][s[m]] * p_x[m][s[m], c, x[m]] for m in range(2))
        q = [qX[x] * q_c[i][x[i], c] * math.prod(q_s[j][x[j], s[j]] for j in range(2)) for i in range(2)]
        expected = torch.tensor([*q, p]) / (p + sum(q))
        q_xsc = [q_marg[m][x[m]] * q_s[m][x[m], s[m]] * q_c[m][x[m], c] for m in range(2)]
        p_xsc = [p_s[m][s[m]] * p_c[c] * p_x[m][s[m], c, x[m]] for m in range(2)]
        q_xs = [q_marg[m][x[m]] * q_s[m][x[m], s[m]] for m in range(2)]
        a = torch.tensor([[math.log(q_xsc[m] / p_xsc[m])] for m in range(2)])
        b = torch.tensor([[math.log(q_xsc[m] / (q_xs[m] * p_c[c]))] for m in range(2)])
        t = torch.tensor([math.log(qX[x] / (q_marg[0][x1] * q_marg[1][x2]))])
        got = torch.softmax(joint_logits(a, b, t), -1)[0]
        torch.testing.assert_close(got, expected.to(got.dtype), rtol=1e-5, atol=1e-7)


def test_non_saturating_loss_by_hand():
    logits = torch.tensor([[0.3, -1.0, 2.0]])
    p = torch.softmax(logits, -1)[0]
    expected = -(p[0].log() + p[2].log()) / 2
    torch.testing.assert_close(non_saturating(logits, 1), expected[None])


# --- oracle discriminators --------------------------------------------------------

FAKE, K = 1000.0, 30.0


class Tagged(nn.Module):
    """Encoder stub: z = 10 (m + 1) everywhere with scale e^-30; decoder stub: x = FAKE."""

    def __init__(self, value: float, out: int, encoder: bool) -> None:
        super().__init__()
        self.value, self.out, self.encoder = value, out, encoder
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, v):
        full = torch.full((v.shape[0], self.out), self.value) + 0 * self.dummy
        return (full, torch.full_like(full, -30.0)) if self.encoder else full


class Oracle(nn.Module):
    """A perfect discriminator of the toy data: `rule(xs, content) -> class or logit sign`."""

    def __init__(self, rule) -> None:
        super().__init__()
        self.rule = rule

    def forward(self, *args):
        return self.rule(*args)


def source(content: torch.Tensor, names: list[str]) -> list[str | None]:
    """Which encoder a content block came from (None: the prior)."""
    v = content.detach().mean(-1)
    return [next((n for i, n in enumerate(names) if abs(float(x) - 10 * (i + 1)) < 1e-3), None) for x in v]


def onehot(classes: list[int], n: int, k: float = K) -> torch.Tensor:
    return k * nn.functional.one_hot(torch.tensor(classes), n).float()


def tagged_model(M: int, discriminator: str = "factorized", k: float = K, swap: bool = False):
    names = ["a", "b", "c"][:M]
    model = tiny(names, dims=(1, 1, 1), discriminator=discriminator)
    for i, n in enumerate(names):
        model.encoders[n] = Tagged(10.0 * (i + 1), model.latent_dim, True)
        model.decoders[n] = Tagged(FAKE, 1, False)
    C = model.latent_split["content"]

    def pair_rule(m):
        def rule(xs, z):
            classes = []
            for x, src in zip(xs[0][:, 0].detach(), source(z[:, C], names)):
                others = [n for n in names if n != m]  # classes: own 0, decoder 1, others 2..
                label = 1 if float(x) == FAKE else 0 if src == m else 2 + others.index(src)
                if swap and label in (0, 2):
                    label = 2 - label
                classes.append(label)
            return onehot(classes, M + 1, k)
        return rule

    def content_rule(m):
        return lambda xs, z: torch.tensor([[k if s == m else -k] for s in source(z[:, C], names)])

    def dependence(xs):
        same = torch.stack([x[:, 0] == xs[0][:, 0] for x in xs]).all(0)
        return torch.where(same, k, -k)

    def joint_rule(xs, z):
        srcs = source(z[:, -(model.latent_dim - model.style_dim):], names)
        return onehot([M if float(x) == FAKE else names.index(s) for x, s in zip(xs[0][:, 0].detach(), srcs)], M + 1, k)

    if discriminator == "factorized":
        for n in names:
            model.discriminators["pair"][n] = Oracle(pair_rule(n))
            model.discriminators["content"][n] = Oracle(content_rule(n))
        model.discriminators["dependence"] = Oracle(dependence)
    else:
        model.discriminators["joint"] = Oracle(joint_rule)
    B = 8
    rows = torch.arange(B, dtype=torch.float32)[:, None]
    return model, Batch({n: rows.clone() for n in names})


@pytest.mark.parametrize("M", [2, 3])
@pytest.mark.parametrize("discriminator", ["factorized", "joint"])
def test_perfect_discriminator_minimises_the_discriminator_loss(M, discriminator):
    torch.manual_seed(0)
    model, batch = tagged_model(M, discriminator)
    loss = model.discriminator_loss(batch).loss
    assert 0 <= float(loss) < 1e-9  # each term is about (M + 1) e^-K
    uniform, batch = tagged_model(M, discriminator, k=0.0)
    n_ce = M * M + M if discriminator == "factorized" else M + 1
    n_logistic = M + 1 if discriminator == "factorized" else 0
    expected = n_ce * math.log(M + 1) + n_logistic * 2 * math.log(2)
    assert float(uniform.discriminator_loss(batch).loss) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("discriminator", ["factorized", "joint"])
def test_rows_missing_a_modality_drop_exactly_the_terms_that_read_it(discriminator):
    """Modality b missing everywhere, uniform discriminators (every CE term log(M+1), every
    logistic term 2 log 2, every non-saturating term log(M+1)): the losses count only
    the terms of a alone: D_a[0] on the encoder and decoder pairs and D_a[1]."""
    torch.manual_seed(0)
    model, batch = tagged_model(3, discriminator, k=0.0)
    mask = {"b": torch.zeros(batch.size, dtype=torch.bool)}
    batch = Batch(batch.data, mask)
    d_loss = float(model.discriminator_loss(batch).loss)
    out = model(batch).metrics
    if discriminator == "joint":
        assert d_loss == 0 and out["adv_joint"] == 0 and "adv_unimodal" not in out
        return
    # a and c observed: D_a[0], D_c[0] own, decoder and the a-c cross pairs; D_a[1], D_c[1]
    assert d_loss == pytest.approx(6 * math.log(4) + 2 * 2 * math.log(2), rel=1e-6)
    assert out["adv_joint"] == 0
    assert out["adv_unimodal"] == pytest.approx(0.1 * 2 / 4 * 6 * math.log(4), rel=1e-6)


def test_discriminator_with_the_classes_swapped_is_penalised():
    torch.manual_seed(0)
    model, batch = tagged_model(2, swap=True)
    assert float(model.discriminator_loss(batch).loss) > K


def test_generator_term_is_eq10_logits_under_the_non_saturating_loss():
    """Constant discriminators: the joint term is (2/(M+1)) sum_k NS(joint_logits(a, b, t), k)."""
    M = 3
    model = tiny(["a", "b", "c"], unimodal_weight=0.0)
    pair = {n: torch.tensor([0.5 * i, -0.3, 0.2, 1.0]) for i, n in enumerate(model.names)}
    content = {n: 0.7 - 0.4 * i for i, n in enumerate(model.names)}
    for n in model.names:
        model.discriminators["pair"][n] = Oracle(lambda xs, z, v=pair[n]: v.expand(z.shape[0], -1))
        model.discriminators["content"][n] = Oracle(lambda xs, z, v=content[n]: torch.full((z.shape[0], 1), v))
    model.discriminators["dependence"] = Oracle(lambda xs: torch.full((xs[0].shape[0],), -0.9))
    a = torch.stack([pair[n][0] - pair[n][1] for n in model.names])[:, None]
    b = torch.tensor([content[n] for n in model.names])[:, None]
    logits = joint_logits(a, b, torch.tensor([-0.9]))
    logp = torch.log_softmax(logits, -1)[0]
    expected = 2 / (M + 1) * sum(-(logp.sum() - logp[k]) / M for k in range(M + 1))
    out = model(random_batch(model))
    assert out.metrics["adv_joint"] == pytest.approx(float(expected), rel=1e-6)


# --- spectral norm ----------------------------------------------------------------


def test_spectral_norm_keeps_the_largest_singular_value_near_one():
    torch.manual_seed(0)
    nets = [XZDiscriminator([(1, 28, 28)], 6, 3, ["mlp"], features=16, hidden=32, x_hidden=32),
            DotProductCritic([(4,), (5,)], ["mlp", "mlp"], features=8, x_hidden=16), conv_features((3, 32, 32), 16)]
    layers = [mod for net in nets for mod in net.modules() if hasattr(mod, "parametrizations")]
    assert len(layers) == 7 + 6 + 4
    with torch.no_grad():
        for layer in layers:
            layer.parametrizations.weight.original.mul_(25.0)
    inputs = [([torch.rand(4, 1, 28, 28)], torch.randn(4, 6)), ([torch.randn(4, 4), torch.randn(4, 5)],),
              (torch.rand(4, 3, 32, 32),)]
    for _ in range(60):  # one power iteration per training-mode forward
        for net, args in zip(nets, inputs):
            net(*args)
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        raw = torch.linalg.matrix_norm(layer.parametrizations.weight.original.detach().flatten(1), ord=2)
        assert float(raw) > 5 and abs(float(sigma) - 1) < 0.02, (layer, float(sigma))


# --- partial observation -----------------------------------------------------------


def test_generator_never_reads_a_missing_modality():
    model = tiny(x_rec=0.05, s_rec=0.05, c_rec=0.05).eval()  # eval: no power iteration between the calls
    silent = ("discriminators.pair.b.", "discriminators.content.b.", "discriminators.dependence.")
    check_missing_modality_is_never_read(model, random_batch(model), silent=silent)


def test_discriminator_step_trains_only_the_terms_a_row_allows():
    model = tiny().eval()
    batch = random_batch(model)
    missing = torch.tensor([True, False, True, False, True, False])
    runs = []
    for fill in (0.0, float("nan")):
        data = dict(batch.data)
        data["b"] = torch.where(missing[:, None], torch.full_like(data["b"], fill), data["b"])
        torch.manual_seed(3)
        model.zero_grad()
        model.discriminator_loss(Batch(data, {"b": ~missing})).loss.backward()
        runs.append(grads(model))
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]) and torch.isfinite(runs[0][k]).all(), k
    model.zero_grad()
    model.discriminator_loss(Batch(batch.data, {"b": torch.zeros(6, dtype=torch.bool)})).loss.backward()
    for k, v in grads(model).items():
        if k.startswith(("discriminators.pair.b.", "discriminators.content.b.", "discriminators.dependence.")):
            assert torch.count_nonzero(v) == 0, k
        if k.startswith(("discriminators.pair.a.", "discriminators.content.a.")) and "original" in k:
            assert torch.count_nonzero(v) > 0, k
        if k.startswith(("encoders.", "decoders.")):
            assert torch.count_nonzero(v) == 0, k  # generator outputs are detached in the D step


@pytest.mark.parametrize("M", [3, 4])
def test_more_modalities_train_and_respect_partial_observation(M):
    names = ["a", "b", "c", "d"][:M]
    model = tiny(names, dims=(5, 3, 4, 2)).eval()
    batch = random_batch(model)
    for group in ("discriminator", "generator"):
        model.zero_grad()
        out = model.training_step(batch, group)
        out.loss.backward()
        assert torch.isfinite(out.loss)
    assert model.discriminators["pair"]["c"]([batch.data["c"]], torch.zeros(6, 4)).shape == (6, M + 1)
    others = {n: torch.tensor([True, True, False, True, True, True]).roll(i) for i, n in enumerate(names[2:])}
    check_missing_modality_is_never_read(
        model, batch, other_masks=others,
        silent=("discriminators.pair.b.", "discriminators.content.b.", "discriminators.dependence."),
    )


# --- inference, generation, contract ----------------------------------------------


def test_geometric_mean_of_gaussians_by_hand():
    locs = torch.tensor([[[1.0]], [[3.0]]])
    scales = torch.tensor([[[1.0]], [[0.5]]])
    q = geometric_mean_of_gaussians(locs, scales, torch.ones(2, 1, dtype=torch.bool))
    precision = (1 / 1.0 + 1 / 0.25) / 2
    torch.testing.assert_close(q.scale, torch.tensor([[precision**-0.5]]))
    torch.testing.assert_close(q.loc, torch.tensor([[(1.0 * 1 + 3.0 * 4) / 5]]))
    same = geometric_mean_of_gaussians(locs[[0, 0]], scales[[0, 0]], torch.ones(2, 1, dtype=torch.bool))
    torch.testing.assert_close((same.loc, same.scale), (locs[0], scales[0]))
    one = geometric_mean_of_gaussians(locs, scales, torch.tensor([[False], [True]]))
    torch.testing.assert_close((one.loc, one.scale), (locs[1], scales[1]))
    none = geometric_mean_of_gaussians(locs, scales, torch.zeros(2, 1, dtype=torch.bool))
    torch.testing.assert_close((none.loc, none.scale), (torch.zeros(1, 1), torch.ones(1, 1)))


def test_cross_generation_uses_content_of_the_sources_and_the_target_style():
    model = tiny().eval()
    batch = random_batch(model)
    S, C = model.latent_split["style"], model.latent_split["content"]
    qa, qb = model.posterior("a", batch.data["a"]), model.posterior("b", batch.data["b"])
    joint = model.encode(batch, ["a", "b"])
    with torch.no_grad():
        synergy = model.decoders["a"](torch.cat([qa.loc[:, S], joint.loc[:, C]], -1))
        cross = model.decoders["b"](torch.cat([torch.zeros(6, 2), qa.loc[:, C]], -1))
    torch.testing.assert_close(model.cross_generate(batch, ["a", "b"], "a", mean=True), synergy)
    torch.testing.assert_close(model.cross_generate(batch, "a", "b", mean=True), cross)
    assert model.latent_split == {"style": slice(0, 2), "content": slice(2, 4)}
    torch.manual_seed(0)
    samples = model.sample(5)
    assert samples["a"].shape == (5, 5) and samples["b"].shape == (5, 3)
    assert torch.allclose(model.encode(batch, ["b"]).loc, qb.loc)


def test_no_likelihood_and_bad_options_are_clear_errors():
    model = tiny()
    batch = random_batch(model)
    for call in (lambda: model.log_likelihood(batch), lambda: model.bound(batch, 2)):
        with pytest.raises(NotImplementedError, match="no likelihood"):
            call()
    with pytest.raises(ValueError, match="style_dim"):
        tiny(style_dim=4)
    with pytest.raises(ValueError, match="did you mean 'joint'"):
        tiny(discriminator="jont")
    with pytest.raises(ValueError, match="learn_prior: false"):
        build_model(build(ModelConfig, {"name": "mmali", "prior": "normal", "posterior": "normal", "learn_prior": True,
                                        "modalities": {"a": {"encoder": "mlp", "decoder": "mlp"},
                                                       "b": {"encoder": "mlp", "decoder": "mlp"}}}), {"a": (2,), "b": (2,)})
    assert model.schedule() == [("discriminator", 1), ("generator", 1)]
    groups = model.parameter_groups()
    assert {id(p) for p in groups["generator"]} == {id(p) for p in [*model.encoders.parameters(), *model.decoders.parameters()]}
    assert {id(p) for p in groups["discriminator"]} == {id(p) for p in model.discriminators.parameters()}

"""Networks accept any leading latent dimensions; distributions match torch's."""

from __future__ import annotations

import math

import pytest
import torch

from mmdgm import Batch, Modality
from mmdgm.distributions import SCALES, Laplace, Normal
from mmdgm.models import MODELS
from mmdgm.nets import DECODERS, ENCODERS
from mmdgm.nets.layers import ACTIVATIONS


@pytest.mark.parametrize("name,shape", [("mnist-mlp", (1, 28, 28)), ("svhn-conv", (3, 32, 32)), ("mlp", (7,))])
def test_decoders_accept_leading_dims(name, shape):
    torch.manual_seed(0)
    dec = DECODERS.get(name)(shape, 5)
    z = torch.randn(3, 4, 5)
    out = dec(z)
    assert out.shape == (3, 4, *shape)
    torch.testing.assert_close(out, dec(z.reshape(12, 5)).reshape(3, 4, *shape))
    loc, raw = ENCODERS.get(name)(shape, 5)(torch.rand(4, *shape))
    assert loc.shape == raw.shape == (4, 5)


@pytest.mark.parametrize("ours,theirs", [(Normal, torch.distributions.Normal), (Laplace, torch.distributions.Laplace)])
def test_log_prob_and_kl_match_torch(ours, theirs):
    torch.manual_seed(0)
    loc, scale, x = torch.randn(4, 3), torch.rand(4, 3) + 0.2, torch.randn(4, 3)
    torch.testing.assert_close(ours(loc, scale).log_prob(x), theirs(loc, scale).log_prob(x))
    torch.testing.assert_close(ours(loc, 0.75).log_prob(x), theirs(loc, 0.75).log_prob(x))
    torch.testing.assert_close(ours(loc, 0.75).log_prob_sum(x, 1), theirs(loc, 0.75).log_prob(x).sum(-1))
    loc2, scale2 = torch.randn(4, 3), torch.rand(4, 3) + 0.2
    if ours is Normal:
        want = torch.distributions.kl_divergence(theirs(loc, scale), theirs(loc2, scale2))
    else:  # torch has no Laplace-Laplace KL: Monte-Carlo with 400k draws
        draws = theirs(loc, scale).sample((400_000,))
        want = (theirs(loc, scale).log_prob(draws) - theirs(loc2, scale2).log_prob(draws)).mean(0)
    torch.testing.assert_close(ours(loc, scale).kl(ours(loc2, scale2)), want, rtol=0.02, atol=0.01)


@pytest.mark.parametrize("cls,abs_dev", [(Normal, math.sqrt(2 / math.pi)), (Laplace, 1.0)])
def test_rsample_moments_and_gradients(cls, abs_dev):
    torch.manual_seed(0)
    loc = torch.tensor([1.0, -2.0], requires_grad=True)
    scale = torch.tensor([0.5, 2.0], requires_grad=True)
    z = cls(loc, scale).rsample((200_000,))
    torch.testing.assert_close(z.mean(0), loc.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close((z - loc).abs().mean(0), abs_dev * scale.detach(), atol=0.02, rtol=0.01)
    z.mean(0).sum().backward()
    torch.testing.assert_close(loc.grad, torch.ones(2))


def test_scale_parameterisations():
    raw = torch.randn(6, 20)
    s = SCALES.get("softmax")(raw)
    torch.testing.assert_close(s.sum(-1), torch.full((6,), 20.0), rtol=0, atol=1e-4)
    assert (SCALES.get("softplus")(torch.full((3,), -50.0)) > 0).all()
    torch.testing.assert_close(SCALES.get("exp")(torch.zeros(2)), torch.ones(2))


def test_save_grid_layout(tmp_path):
    """Rows of different sizes/channels share one canvas; pixels land where expected."""
    from PIL import Image

    from mmdgm.train.grids import save_grid

    grey = torch.zeros(3, 1, 28, 28)
    grey[1] = 1.0
    colour = torch.zeros(2, 3, 32, 32)
    colour[0, 0] = 1.0
    save_grid([grey, colour], tmp_path / "g.png", pad=2, zoom=1)
    img = torch.tensor(__import__("numpy").array(Image.open(tmp_path / "g.png"))).float() / 255
    cell = 34
    assert img.shape == (2 * cell + 2, 3 * cell + 2, 3)
    torch.testing.assert_close(img[2 + 16, 2 + cell + 16], torch.ones(3))  # white digit, row 0 col 1
    torch.testing.assert_close(img[2 + 16, 2 + 16], torch.zeros(3))  # black digit, row 0 col 0
    torch.testing.assert_close(img[2 + cell + 16, 2 + 16], torch.tensor([1.0, 0, 0]))  # red, row 1 col 0


def test_fused_laplace_log_prob_sum_gradients():
    """The custom backward of Laplace.log_prob_sum (fixed scale) matches autograd's, for
    gradients to loc (broadcast over leading K) and to x (summed over the broadcast)."""
    torch.manual_seed(0)
    loc = torch.randn(4, 3, 5, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: Laplace(a, 0.75).log_prob_sum(b, 2), (loc, x))
    got = Laplace(loc, 0.75).log_prob_sum(x, 2)
    want = torch.distributions.Laplace(loc, 0.75).log_prob(x).sum((-2, -1))
    torch.testing.assert_close(got, want)


def layer_sizes(net: torch.nn.Module) -> list[tuple[int, int] | str]:
    """(in, out) of each linear layer and the name of each activation, in order."""
    kinds = (torch.nn.Linear, *ACTIVATIONS.values())
    layers = [m for m in net.modules() if isinstance(m, kinds)]
    return [(m.in_features, m.out_features) if isinstance(m, torch.nn.Linear) else type(m).__name__ for m in layers]


def test_generic_mlp_without_hidden_layers_is_linear_and_trains():
    enc, dec = ENCODERS.get("mlp")((7,), 3, hidden=[]), DECODERS.get("mlp")((7,), 3, hidden=[])
    assert layer_sizes(enc) == [(7, 3), (7, 3)] and layer_sizes(dec) == [(3, 7)]
    torch.manual_seed(0)
    mods = [Modality(n, (7,), kind="vector", net_options={"hidden": []}) for n in "ab"]
    model = MODELS.get("mmvae")(mods, 3, K=2)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(Batch({"a": torch.randn(5, 7), "b": torch.randn(5, 7)})).loss.backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()) if p.requires_grad)

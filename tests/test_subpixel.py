"""The SVHN decoder's sub-pixel output layer: the same map and gradients as the transposed
convolution it replaces (against a hand-written loop and against torch's transposed
convolution, float64), the same parameters and checkpoint keys."""

from __future__ import annotations

import torch
from torch import nn

from mmdgm.nets.conv import subpixel_conv_transpose, subpixel_index, svhn_decoder

F64 = torch.float64


def transposed_conv_by_hand(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """conv_transpose2d(stride 2, padding 1, kernel 4) by its definition: input pixel (i, j)
    adds x[i, j] w[:, :, k, l] to output pixel (2i - 1 + k, 2j - 1 + l) when inside."""
    n, c_in, h, _ = x.shape
    out = b.view(1, -1, 1, 1).expand(n, -1, 2 * h, 2 * h).clone()
    for i in range(h):
        for j in range(h):
            for k in range(4):
                for l in range(4):
                    o, p = 2 * i - 1 + k, 2 * j - 1 + l
                    if 0 <= o < 2 * h and 0 <= p < 2 * h:
                        out[:, :, o, p] += torch.einsum("nc,cd->nd", x[:, :, i, j], w[:, :, k, l])
    return out


def test_subpixel_equals_the_transposed_convolution_by_hand():
    g = torch.Generator().manual_seed(0)
    deconv = nn.ConvTranspose2d(2, 3, 4, 2, 1).double()
    with torch.no_grad():
        deconv.weight.copy_(torch.randn(2, 3, 4, 4, generator=g, dtype=F64))
        deconv.bias.copy_(torch.randn(3, generator=g, dtype=F64))
    x = torch.randn(2, 2, 5, 5, generator=g, dtype=F64)
    index, valid = subpixel_index(2, 3)
    assert int(valid.sum()) == 3 * 2 * 16  # every kernel tap used once per phase set, 2.25x as many slots
    got = subpixel_conv_transpose(x, deconv, index, valid)
    want = transposed_conv_by_hand(x, deconv.weight.detach(), deconv.bias.detach())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_decoder_outputs_and_gradients_match_the_transposed_convolution():
    torch.manual_seed(0)
    new = svhn_decoder((3, 32, 32), 5, width=4).double()
    old = svhn_decoder((3, 32, 32), 5, width=4, subpixel_output=False).double()
    assert list(new.state_dict()) == list(old.state_dict())  # checkpoints load either way
    old.load_state_dict(new.state_dict())
    z = torch.randn(2, 3, 5, dtype=F64, requires_grad=True)
    a, b = new(z), old(z)
    assert a.shape == (2, 3, 3, 32, 32)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, [z, *new.parameters()], g)
    gb = torch.autograd.grad(b, [z, *old.parameters()], g)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-10)

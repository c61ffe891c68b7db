"""1-D convolutional networks over one-hot character strings (L, V), after the text
networks of Sutter et al. (2020) for MNIST-SVHN-Text: a width-1 convolution embeds each
character, two stride-2 convolutions (k4 p1) halve the length twice, and linear heads
give the posterior; the decoder mirrors it with transposed convolutions and a width-1
convolution to V logits per position (the `categorical` likelihood normalises them).
Their networks collapse L=8 to one position with a final unpadded k4 convolution; here
the last two dimensions are flattened instead, so any L divisible by 4 works.
"""

from __future__ import annotations

from torch import Tensor, nn

from mmdgm.nets.layers import LeadingDims
from mmdgm.nets.registry import DECODERS, ENCODERS


def check_text_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(L, V) of a text modality's shape; a ValueError unless it is (L, V) with 4 | L."""
    if len(shape) != 2 or shape[0] % 4 or shape[0] < 4:
        raise ValueError(f"text-conv networks need one-hot strings of shape (L, V) with L divisible by 4, got {shape}")
    return int(shape[0]), int(shape[1])


class TextEncoder(nn.Module):
    """(B, L, V) one-hot -> conv1(V->w) relu, conv4/2(w->w) relu, conv4/2(w->w) relu ->
    flatten (w * L/4) -> loc and raw-scale heads."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, width: int = 128) -> None:
        super().__init__()
        length, symbols = check_text_shape(shape)
        self.body = nn.Sequential(
            nn.Conv1d(symbols, width, 1), nn.ReLU(True),
            nn.Conv1d(width, width, 4, 2, 1), nn.ReLU(True),
            nn.Conv1d(width, width, 4, 2, 1), nn.ReLU(True),
            nn.Flatten(),
        )
        self.loc = nn.Linear(width * length // 4, latent_dim)
        self.raw_scale = nn.Linear(width * length // 4, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x.transpose(-2, -1))
        return self.loc(h), self.raw_scale(h)


class TextDecoderBody(nn.Module):
    """(N, D) -> linear (w * L/4) relu -> convT4/2 relu, convT4/2 relu -> conv1(w->V):
    logits (N, L, V)."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, width: int = 128) -> None:
        super().__init__()
        length, symbols = check_text_shape(shape)
        self.start = (width, length // 4)
        self.linear = nn.Sequential(nn.Linear(latent_dim, width * length // 4), nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose1d(width, width, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose1d(width, width, 4, 2, 1), nn.ReLU(True),
            nn.Conv1d(width, symbols, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.linear(z).view(-1, *self.start)
        return self.net(h).transpose(-2, -1)


@ENCODERS.register("text-conv")
def text_encoder(shape: tuple[int, ...], latent_dim: int, width: int = 128) -> nn.Module:
    """Sutter et al.'s text encoder shape (width = their 2 * dim = 128 channels)."""
    return TextEncoder(shape, latent_dim, width)


@DECODERS.register("text-conv")
def text_decoder(shape: tuple[int, ...], latent_dim: int, width: int = 128) -> nn.Module:
    """The mirror decoder; outputs logits (..., L, V) for the `categorical` likelihood."""
    return LeadingDims(TextDecoderBody(shape, latent_dim, width), shape)

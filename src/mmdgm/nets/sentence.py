"""The CUB caption and image networks of MMVAE (Shi et al. 2019, §4.3; code
`vae_cub_sent.py`, `vae_cub_image.py`).

Captions (`cub-sentence`): a word embedding (V x E, padding row 0) turns a caption of L
tokens into a 1 x L x E "image"; three k4 s2 p1 convolutions (w, 2w, 4w channels) and two
(1,4) s(1,2) p(0,1) convolutions (4w, 4w), each with BatchNorm and ReLU, reduce it to
4w x L/8 x E/32, and two convolutions over that whole map give (loc, raw scale). The
decoder mirrors it with transposed convolutions (the last one to 1 channel, ReLU), reads
the 1 x L x E output as L vectors of size E and maps them to V logits with a linear layer
whose weight IS the encoder's embedding matrix (tied by `tie_weights`, which the model
calls after building both). With L = 32, E = 128, w = 32 these are the authors' networks
(their final maps are 4 x 4). The paper tables of MEME / relating-by-contrasting list
4w -> 8w -> 16w channels for the two (1,4) layers; the code has 4w, 4w.
Inputs are token indices (B, L) or one-hot/probability rows (B, L, V) (multiplied by the
embedding matrix), so generated captions can be encoded again.

Images (`cub-conv`): C x 64 x 64 -> conv k4 s2 p1 (w, 2w, 4w, 8w; ReLU) -> two k4
convolutions to (loc, raw scale); the decoder mirrors it with a sigmoid output (w = 64 in
the authors' code).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmdgm.nets.layers import LeadingDims
from mmdgm.nets.registry import DECODERS, ENCODERS


def check_sentence(shape: tuple[int, ...], embedding_dim: int, width: int) -> tuple[int, int]:
    """(L, V) of a caption modality; a ValueError unless 8 | L and 32 | E."""
    if len(shape) != 2 or shape[0] % 8 or shape[0] < 8:
        raise ValueError(f"cub-sentence networks need captions of shape (L, V) with L divisible by 8, got {shape}")
    if embedding_dim < 32 or embedding_dim % 32 or width < 1:
        raise ValueError(f"cub-sentence needs embedding_dim divisible by 32 and width >= 1, got {embedding_dim}, {width}")
    return int(shape[0]), int(shape[1])


def block(conv: nn.Module, channels: int, batch_norm: bool) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.ReLU(True)] if batch_norm else [conv, nn.ReLU(True)]


class SentenceEncoder(nn.Module):
    """Caption (B, L) indices or (B, L, V) scores -> (loc, raw scale), each (B, D)."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, embedding_dim: int = 128, width: int = 32,
                 batch_norm: bool = True) -> None:
        super().__init__()
        length, vocab = check_sentence(shape, embedding_dim, width)
        self.embedding = nn.Embedding(vocab, embedding_dim, padding_idx=0)
        w, bias = width, not batch_norm
        self.body = nn.Sequential(
            *block(nn.Conv2d(1, w, 4, 2, 1, bias=bias), w, batch_norm),
            *block(nn.Conv2d(w, 2 * w, 4, 2, 1, bias=bias), 2 * w, batch_norm),
            *block(nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=bias), 4 * w, batch_norm),
            *block(nn.Conv2d(4 * w, 4 * w, (1, 4), (1, 2), (0, 1), bias=bias), 4 * w, batch_norm),
            *block(nn.Conv2d(4 * w, 4 * w, (1, 4), (1, 2), (0, 1), bias=bias), 4 * w, batch_norm),
        )
        kernel = (length // 8, embedding_dim // 32)
        self.loc = nn.Conv2d(4 * w, latent_dim, kernel, 1, 0, bias=False)
        self.raw_scale = nn.Conv2d(4 * w, latent_dim, kernel, 1, 0, bias=False)

    def embed(self, x: Tensor) -> Tensor:
        """(B, L, E) embeddings of indices or of one-hot/probability rows."""
        if torch.is_floating_point(x):
            return x @ self.embedding.weight
        return self.embedding(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(self.embed(x).unsqueeze(1))
        return self.loc(h).flatten(1), self.raw_scale(h).flatten(1)


class SentenceDecoder(nn.Module):
    """Latents (..., D) -> logits (..., L, V); the output layer's weight is tied to the
    encoder's embedding by `tie_weights` (until then it is its own parameter)."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, embedding_dim: int = 128, width: int = 32,
                 batch_norm: bool = True) -> None:
        super().__init__()
        length, vocab = check_sentence(shape, embedding_dim, width)
        w, bias = width, not batch_norm
        kernel = (length // 8, embedding_dim // 32)
        self.shape = (length, vocab)
        self.net = nn.Sequential(
            *block(nn.ConvTranspose2d(latent_dim, 4 * w, kernel, 1, 0, bias=bias), 4 * w, batch_norm),
            *block(nn.ConvTranspose2d(4 * w, 4 * w, (1, 4), (1, 2), (0, 1), bias=bias), 4 * w, batch_norm),
            *block(nn.ConvTranspose2d(4 * w, 4 * w, (1, 4), (1, 2), (0, 1), bias=bias), 4 * w, batch_norm),
            *block(nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=bias), 2 * w, batch_norm),
            *block(nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=bias), w, batch_norm),
            nn.ConvTranspose2d(w, 1, 4, 2, 1, bias=bias), nn.ReLU(True),
        )
        self.out = nn.Linear(embedding_dim, vocab)

    def tie_weights(self, encoder: nn.Module) -> None:
        """Share the encoder's embedding matrix (V, E) as the output weight (MMVAE's `tie_modules`)."""
        if not isinstance(encoder, SentenceEncoder) or encoder.embedding.weight.shape != self.out.weight.shape:
            raise ValueError("cub-sentence decoder must be paired with a cub-sentence encoder of the same sizes")
        self.out.weight = encoder.embedding.weight

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.net(z.reshape(-1, z.shape[-1], 1, 1))
        return self.out(h.squeeze(1)).reshape(*lead, *self.shape)


@ENCODERS.register("cub-sentence")
def sentence_encoder(shape: tuple[int, ...], latent_dim: int, embedding_dim: int = 128, width: int = 32,
                     batch_norm: bool = True) -> nn.Module:
    """MMVAE's CUB caption encoder (E = 128, w = 32, BatchNorm)."""
    return SentenceEncoder(shape, latent_dim, embedding_dim, width, batch_norm)


@DECODERS.register("cub-sentence")
def sentence_decoder(shape: tuple[int, ...], latent_dim: int, embedding_dim: int = 128, width: int = 32,
                     batch_norm: bool = True) -> nn.Module:
    """MMVAE's CUB caption decoder; logits for `categorical-padded`, output tied to the embedding."""
    return SentenceDecoder(shape, latent_dim, embedding_dim, width, batch_norm)


def check_image64(shape: tuple[int, ...]) -> None:
    if len(shape) != 3 or tuple(shape[1:]) != (64, 64):
        raise ValueError(f"cub-conv networks need C x 64 x 64 images, got shape {shape}")


class Image64Encoder(nn.Module):
    """C x 64 x 64 -> conv k4 s2 p1 (w, 2w, 4w, 8w) ReLU -> two k4 heads."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, width: int = 64) -> None:
        super().__init__()
        check_image64(shape)
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(shape[0], w, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(True),
            nn.Conv2d(4 * w, 8 * w, 4, 2, 1), nn.ReLU(True),
        )
        self.loc = nn.Conv2d(8 * w, latent_dim, 4, 1, 0)
        self.raw_scale = nn.Conv2d(8 * w, latent_dim, 4, 1, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.loc(h).flatten(1), self.raw_scale(h).flatten(1)


class Image64DecoderBody(nn.Module):
    """(N, D) -> convT k4 (8w), convT k4 s2 p1 (4w, 2w, w; ReLU), convT to C, sigmoid."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, width: int = 64) -> None:
        super().__init__()
        check_image64(shape)
        w = width
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 8 * w, 4, 1, 0), nn.ReLU(True),
            nn.ConvTranspose2d(8 * w, 4 * w, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose2d(w, shape[0], 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


@ENCODERS.register("cub-conv")
def image64_encoder(shape: tuple[int, ...], latent_dim: int, width: int = 64) -> nn.Module:
    """MMVAE's CUB image encoder for 64 x 64 images."""
    return Image64Encoder(shape, latent_dim, width)


@DECODERS.register("cub-conv")
def image64_decoder(shape: tuple[int, ...], latent_dim: int, width: int = 64) -> nn.Module:
    """MMVAE's CUB image decoder (sigmoid mean)."""
    return LeadingDims(Image64DecoderBody(shape, latent_dim, width), shape)

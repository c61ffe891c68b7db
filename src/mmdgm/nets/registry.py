"""Network registries.

Encoder builders: `(shape, latent_dim, **options) -> nn.Module` mapping a batch (B, *shape)
to two tensors (loc, raw_scale), each (B, latent_dim).
Decoder builders: `(shape, latent_dim, **options) -> nn.Module` mapping latents of any
leading dimensions (..., latent_dim) to the output location (..., *shape).
"""

from mmdgm.registry import Registry

ENCODERS: Registry = Registry("encoder network")
DECODERS: Registry = Registry("decoder network")

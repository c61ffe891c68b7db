"""The partial-observation contract every model keeps, as one reusable check."""

from __future__ import annotations

import torch

from mmdgm import Batch


def grads(model) -> dict[str, torch.Tensor]:
    """Every parameter's gradient (zeros where none was accumulated)."""
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in model.named_parameters()}


def check_missing_modality_is_never_read(
    model, batch: Batch, other_masks: dict[str, torch.Tensor] | None = None, silent: tuple[str, ...] = (),
    learnt_prior: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Rows where modality b is missing: placeholders of zeros or NaN give bit-identical,
    finite gradients; with b missing everywhere, b's networks (and the `silent` parameter
    prefixes) get exactly zero gradient while a's get some. `learnt_prior` names prefixes
    of b's networks that a model's prior runs on learnt inputs, never on b's data (MEME's
    pseudo-sample prior uses b's encoder): they are exempt from the zero check, the
    placeholder check still covers them. Returns the partial-batch gradients."""
    missing = torch.tensor([True, False, True, False, True, False])
    outs = []
    for fill in (0.0, float("nan")):
        data = dict(batch.data)
        shape = (-1,) + (1,) * (data["b"].dim() - 1)
        data["b"] = torch.where(missing.view(shape), torch.full_like(data["b"], fill), data["b"])
        torch.manual_seed(3)
        model.zero_grad()
        model(Batch(data, {"b": ~missing, **(other_masks or {})})).loss.backward()
        outs.append(grads(model))
    for k in outs[0]:
        torch.testing.assert_close(outs[0][k], outs[1][k], rtol=0, atol=0)
        assert torch.isfinite(outs[0][k]).all(), k
    model.zero_grad()
    model(Batch(batch.data, {"b": torch.zeros(batch.size, dtype=torch.bool)})).loss.backward()
    for k, v in grads(model).items():
        if k.startswith(("encoders.b.", "decoders.b.", *silent)) and not k.startswith(learnt_prior):
            assert torch.count_nonzero(v) == 0, k
        if k.startswith(("encoders.a.", "decoders.a.")):
            assert torch.count_nonzero(v) > 0, k
    return outs[0]

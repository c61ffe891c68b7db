"""Mixed precision on GPUs (`train.precision`): autocast of the networks only.

Each network of the model (an encoder, decoder, discriminator: the outermost submodules
that are not containers) runs under torch.autocast in bf16 or fp16, and its floating
outputs are cast back to float32 where they leave it. Everything the model computes from
them (distribution parameters, log-densities and their sums over dimensions, log-weights,
log-sum-exp, the estimators of mmdgm.objectives, the loss) therefore runs in float32
outside autocast. fp16 adds a gradient scaler per parameter group (its optimiser step is
skipped where the scaled gradient overflows, as torch.amp.GradScaler does).

On CPUs both are refused: on the project's AVX2 machines a bf16 2048x2048 matmul ran at
0.2 GFLOP/s against 60-180 GFLOP/s in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from mmdgm.config import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_SLOWDOWN = (
    "on the CPUs this was measured on (AVX2, no native bf16/fp16 matmul) a bf16 2048x2048 matmul runs at "
    "0.2 GFLOP/s against 60-180 GFLOP/s in float32"
)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse bf16 / fp16 anywhere but on a CUDA device."""
    if precision != "fp32" and device.type != "cuda":
        raise ConfigError(
            f"train.precision={precision} needs a CUDA GPU and this run is on {device}: {CPU_SLOWDOWN}; "
            "use train.precision=fp32 on CPUs"
        )


def networks(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, network) for the outermost non-container submodules of a model: children of
    ModuleDict / ModuleList and of wrapped models are searched further."""
    for name, child in module.named_children():
        if isinstance(child, (nn.ModuleDict, nn.ModuleList)) or hasattr(child, "parameter_groups"):
            yield from ((f"{name}.{n}", m) for n, m in networks(child))
        else:
            yield name, child


def to_float32(value: Any) -> Any:
    """`value` with every floating tensor in it (also in tuples, lists, dicts) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: to_float32(v) for k, v in value.items()}
    return value


def autocast_forward(forward: Callable, device_type: str, dtype: torch.dtype) -> Callable:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=dtype):
            out = forward(*args, **kwargs)
        return to_float32(out)

    return run


def autocast_networks(model: nn.Module, precision: str, device: torch.device) -> list[str]:
    """Make every network of `model` run under autocast to `precision` with float32
    outputs (nothing for fp32); returns the networks' names. The parameters, their
    names and the state dict are unchanged."""
    check_precision(precision, device)
    if precision == "fp32":
        return []
    names = []
    for name, net in networks(model):
        net.forward = autocast_forward(net.forward, device.type, DTYPES[precision])
        names.append(name)
    return names


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16, None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None

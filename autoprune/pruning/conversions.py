"""Layers Torch-Pruning does not know, swapped for equivalent layers it does.

HuggingFace's GPT-2 family computes every projection with `transformers.Conv1D`: a Linear
layer whose weight is stored transposed. Torch-Pruning neither traces nor scores it, so a
GPT-2 would prune nothing. `to_prunable` replaces each one with an `nn.Linear` holding the
transposed weight (same outputs); `to_conv1d` turns them back, for `save_pretrained`.
The swap is deterministic, so a pruning history recorded on a converted model replays on
any fresh copy of the user's model. HuggingFace decoders also return a key/value cache that
Torch-Pruning's tracer cannot walk; a search never generates, so the copy turns it off.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn
import torch_pruning as tp


class LinearFromConv1D(nn.Linear):
    """An `nn.Linear` that was a transformers `Conv1D`; `to_conv1d` restores it."""


@contextlib.contextmanager
def conv1d_counted_as_linear():
    """Torch-Pruning's MAC counter looks layers up by exact type: for the length of the block,
    it counts ours as the Linear it is (its global table is left as it was afterwards)."""
    table = tp.utils.op_counter.MODULES_MAPPING
    added = LinearFromConv1D not in table
    if added:
        table[LinearFromConv1D] = table[nn.Linear]
    try:
        yield
    finally:
        if added:
            table.pop(LinearFromConv1D, None)


def _is_conv1d(module: nn.Module) -> bool:
    return (type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx")
            and tuple(module.weight.shape) == (module.nx, module.nf))


def _uses_cache(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "use_cache", False))


def prepare(model: nn.Module) -> nn.Module:
    """The model autoprune works on: `model` itself, or a converted copy when it has Conv1D
    layers or a key/value cache switched on (the user's model is never changed)."""
    if not (_uses_cache(model) or any(_is_conv1d(module) for module in model.modules())):
        return model
    return to_prunable(copy.deepcopy(model))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


@torch.no_grad()
def to_prunable(model: nn.Module) -> nn.Module:
    """Swap every `Conv1D` of `model` for an equivalent `nn.Linear` and turn off its
    key/value cache, in place."""
    if _uses_cache(model):
        model.config.use_cache = False
    for name, module in list(model.named_modules()):
        if _is_conv1d(module):
            weight = module.weight
            linear = LinearFromConv1D(module.nx, module.nf, bias=module.bias is not None,
                                      device=weight.device, dtype=weight.dtype)
            linear.weight.copy_(weight.t())
            if module.bias is not None:
                linear.bias.copy_(module.bias)
            _replace(model, name, linear)
    return model


@torch.no_grad()
def to_conv1d(model: nn.Module) -> nn.Module:
    """Undo `to_prunable` in place: each `LinearFromConv1D` becomes a transformers `Conv1D`."""
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        if isinstance(module, LinearFromConv1D):
            conv = Conv1D(module.out_features, module.in_features).to(module.weight.device,
                                                                     module.weight.dtype)
            conv.weight.copy_(module.weight.t())
            if module.bias is not None:
                conv.bias.copy_(module.bias)
            _replace(model, name, conv)
    return model

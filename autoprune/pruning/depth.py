"""Depth pruning: whole decoder layers of a HuggingFace causal LM removed.

A decoder is a stack of residual blocks, and some of them change the hidden state little:
removing those costs less than thinning every layer, and each one removed saves its whole
time, attention, normalisations and framework overhead included (ShortGPT, Minitron). The
block to remove first is the one whose output is most like its input: its block influence,
one minus the mean cosine similarity of the hidden state before and after it over the
example tokens, is smallest. The ranking is taken once on the unpruned model; a trial's
`depth` ratio says how many blocks go.

After the cut the stack is renumbered: each attention module's `layer_idx` (its slot in the
KV cache) and the config's `num_hidden_layers` (and `layer_types`) follow the kept blocks,
so generation with the cache, `save_pretrained` and plain `from_pretrained` see a shallower
model of the same kind. The history entry is `[stack name, False, removed indices,
"blocks"]`, applied after every width cut (the widths are recorded under the full depth's
names).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..runtime.model_io import run_hooked

BLOCKS = "blocks"  # the history marker of a depth cut
DEPTH = "depth"    # the sparsity key holding a trial's depth ratio


def block_stack(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """(name, list) of a HuggingFace decoder's layer stack: the ModuleList holding
    `config.num_hidden_layers` blocks (`model.layers`, GPT-2's `transformer.h`); None if the
    model has none."""
    config = getattr(model, "config", None)
    count = getattr(config, "num_hidden_layers", None)
    if not isinstance(count, int) or count < 2:
        return None
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        return None  # GPT-2 scaling by layer index: a renumbered block would compute otherwise
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and name.endswith(
                ("layers", ".h")):
            return name, module
    return None


def removed_blocks(count: int, ratio: float) -> int:
    """How many of `count` blocks a depth ratio removes (at least one block stays)."""
    return min(count - 1, int(ratio * count + 1e-6)) if ratio > 0 else 0


def _hidden(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def block_influence(model: nn.Module, inputs: Any) -> list[float]:
    """Each block's influence on the example `inputs`: 1 - mean cosine(input, output)."""
    name, stack = block_stack(model)
    seen: dict[int, list[torch.Tensor]] = {}

    def before(index):
        def hook(module, args, kwargs):
            seen[index] = [_hidden(args[0] if args else kwargs["hidden_states"])]
        return hook

    def after(index):
        def hook(module, args, kwargs, output):
            seen[index].append(_hidden(output))
        return hook

    run_hooked(model, inputs, [
        hook for index, block in enumerate(stack)
        for hook in (block.register_forward_pre_hook(before(index), with_kwargs=True),
                     block.register_forward_hook(after(index), with_kwargs=True))])
    return [1.0 - float(F.cosine_similarity(seen[i][0].float(), seen[i][1].float(),
                                            dim=-1).mean()) for i in range(len(stack))]


def removal_order(model: nn.Module, inputs: Any) -> list[int]:
    """Block indices, the least influential first (ties: the later block first)."""
    influence = block_influence(model, inputs)
    return sorted(range(len(influence)), key=lambda i: (influence[i], -i))


def drop_blocks(model: nn.Module, stack_name: str, removed: list[int]) -> None:
    """Remove the blocks `removed` of the stack `stack_name` in place and renumber the rest."""
    modules = dict(model.named_modules())
    stack = modules[stack_name]
    removed = set(removed)
    kept = [i for i in range(len(stack)) if i not in removed]
    parent_name, _, child = stack_name.rpartition(".")
    setattr(modules[parent_name] if parent_name else model, child,
            nn.ModuleList([stack[i] for i in kept]))
    for new_index, old_index in enumerate(kept):
        for module in stack[old_index].modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    config = model.config
    config.num_hidden_layers = len(kept)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in kept]


def prune_depth(model: nn.Module, order: list[int], ratio: float) -> list[list]:
    """Remove the first blocks of `order` that `ratio` asks for; returns the history entry."""
    found = block_stack(model)
    if found is None or ratio <= 0:
        return []
    name, stack = found
    removed = sorted(order[:removed_blocks(len(stack), ratio)])
    if not removed:
        return []
    drop_blocks(model, name, removed)
    return [[name, False, removed, BLOCKS]]


def apply_block_entries(model: nn.Module, entries: list[list]) -> None:
    for name, _, removed, _ in entries:
        drop_blocks(model, name, list(removed))

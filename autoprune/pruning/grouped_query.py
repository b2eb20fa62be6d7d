"""Grouped-query attention (Llama, Qwen2/3, Mistral): remove whole key/value groups.

In grouped-query attention, `num_key_value_groups` query heads share one key/value head. The
unit to remove is a whole group: the key/value head (rows of k_proj and v_proj) with the query
heads that read it (rows of q_proj) and their columns of o_proj. Then every remaining query
head still finds its key/value head at the same ratio, the KV cache shrinks with the groups,
and the module, which reshapes with -1 heads, runs unchanged.

Torch-Pruning couples q, k and v through the key/value repetition, but maps a key/value
channel to one query channel, not to the `num_key_value_groups` query heads that share it
(and its own grouped-query mode hangs on these models), so these four layers are left out of
its pruner and cut here with its per-layer pruning functions. The groups removed are those of
smallest L2 norm over all four layers' weights. Each cut is recorded in the pruning history
as a single-layer entry `[layer, is_output_channels, indices, "layer"]`, replayed as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch_pruning as tp

from .attention import AttentionModule, find_attention

LAYER_ONLY = "layer"  # a history entry that prunes its layer alone, not a dependency group


def grouped_query_attention(model: nn.Module) -> list[AttentionModule]:
    """The grouped-query attention modules of `model`, pruned here rather than by Torch-Pruning."""
    return [a for a in find_attention(model) if a.kind.name.startswith("HuggingFace grouped")]


def projection_layers(model: nn.Module) -> list[nn.Module]:
    """q, k, v and o of every grouped-query attention module (for Torch-Pruning to leave alone)."""
    modules = dict(model.named_modules())
    return [modules[f"{a.name}.{p}"] for a in grouped_query_attention(model)
            for p in ("q_proj", "k_proj", "v_proj", "o_proj")]


def _group_norms(module: nn.Module, groups: int) -> torch.Tensor:
    """L2 norm of each key/value group's weights in q, k, v (rows) and o (columns)."""
    def rows(weight: torch.Tensor) -> torch.Tensor:  # [groups] sums of squares
        return weight.detach().float().pow(2).reshape(groups, -1).sum(1)
    squares = (rows(module.q_proj.weight) + rows(module.k_proj.weight)
               + rows(module.v_proj.weight) + rows(module.o_proj.weight.t().contiguous()))
    return squares.sqrt()


def removed_groups(groups: int, ratio: float) -> int:
    """How many of `groups` a ratio removes: as for whole heads, at least one is kept."""
    return min(groups - 1, math.ceil(ratio * groups)) if ratio > 0 else 0


def prune_groups(model: nn.Module, head_ratios: dict[str, float]) -> list[list]:
    """Remove the weakest key/value groups of each grouped-query module at the ratio given
    for any of its projections in `head_ratios` (as for other attention); returns the
    history entries."""
    modules = dict(model.named_modules())
    history = []
    for attention in grouped_query_attention(model):
        module = modules[attention.name]
        head_dim, shared = module.head_dim, module.num_key_value_groups
        groups = module.k_proj.out_features // head_dim
        ratio = max((float(head_ratios[n]) for n in attention.projections if n in head_ratios),
                    default=0.0)
        count = removed_groups(groups, ratio)
        if count == 0:
            continue
        weakest = sorted(torch.argsort(_group_norms(module, groups))[:count].tolist())
        kv = [c for g in weakest for c in range(g * head_dim, (g + 1) * head_dim)]
        query_width = head_dim * shared
        queries = [c for g in weakest for c in range(g * query_width, (g + 1) * query_width)]
        cuts = [("q_proj", True, queries), ("k_proj", True, kv), ("v_proj", True, kv),
                ("o_proj", False, queries)]
        for name, is_out, indices in cuts:
            history.append([f"{attention.name}.{name}", is_out, indices, LAYER_ONLY])
        apply_layer_entries(model, history[-4:])
    return history


def apply_layer_entries(model: nn.Module, entries: list[list]) -> None:
    """Apply single-layer history entries (output rows or input columns of a Linear)."""
    modules = dict(model.named_modules())
    for name, is_out, indices, _ in entries:
        prune = tp.prune_linear_out_channels if is_out else tp.prune_linear_in_channels
        prune(modules[name], list(indices))

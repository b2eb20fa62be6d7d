"""Attention whose heads Torch-Pruning cannot cut right: Llama-style grouped-query attention
(whole key/value groups) and GPT-2's fused q/k/v projection (whole heads).

In grouped-query attention (Llama, Qwen2/3, Mistral), `num_key_value_groups` query heads share
one key/value head. The unit to remove is a whole group: the key/value head (rows of k_proj
and v_proj) with the query heads that read it (rows of q_proj) and their columns of o_proj.
Then every remaining query head still finds its key/value head at the same ratio, the KV cache
shrinks with the groups, and the module, which reshapes with -1 heads, runs unchanged.
Torch-Pruning couples q, k and v through the key/value repetition, but maps a key/value
channel to one query channel, not to the query heads that share it (and its own grouped-query
mode hangs on these models).

GPT-2 computes q, k and v with one projection, c_attn, whose output is split in three; the
unit is a head: its rows in each third of c_attn and its columns of c_proj. Torch-Pruning does
not map the split back to c_attn's rows.

So these layers are left out of Torch-Pruning's pruner and cut here with its per-layer
pruning functions. The units removed are those of smallest L2 norm over the layers' weights.
Each cut is recorded in the pruning history as a single-layer entry `[layer,
is_output_channels, indices, "layer"]`, replayed as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch_pruning as tp

from .attention import AttentionModule, find_attention

LAYER_ONLY = "layer"  # a history entry that prunes its layer alone, not a dependency group


def grouped_query_attention(model: nn.Module) -> list[AttentionModule]:
    """The attention modules whose heads are cut here rather than by Torch-Pruning."""
    return [a for a in find_attention(model) if not a.kind.by_torch_pruning]


def output_projection(attention: AttentionModule) -> str:
    return f"{attention.name}.{attention.kind.output_projection}"


def projection_layers(model: nn.Module) -> list[nn.Module]:
    """Every layer cut here (for Torch-Pruning to leave alone)."""
    modules = dict(model.named_modules())
    return [modules[name] for a in grouped_query_attention(model)
            for name in (*a.projections, output_projection(a))]


def _fused(attention: AttentionModule) -> bool:
    return len(attention.projections) == 1  # GPT-2's c_attn: q, k and v in one layer


def _units(module: nn.Module, attention: AttentionModule) -> int:
    """Key/value groups (grouped-query) or heads (fused)."""
    if _fused(attention):
        return module.c_attn.out_features // (3 * module.head_dim)
    return module.k_proj.out_features // module.head_dim


def _unit_norms(module: nn.Module, attention: AttentionModule, units: int) -> torch.Tensor:
    """L2 norm of each unit's weights: its rows of the projections, its output columns."""
    def squares(weight: torch.Tensor, parts: int = 1) -> torch.Tensor:  # [units]
        return weight.detach().float().pow(2).reshape(parts, units, -1).sum((0, 2))
    output = getattr(module, attention.kind.output_projection).weight.t().contiguous()
    if _fused(attention):
        return (squares(module.c_attn.weight, 3) + squares(output)).sqrt()
    return (squares(module.q_proj.weight) + squares(module.k_proj.weight)
            + squares(module.v_proj.weight) + squares(output)).sqrt()


def _cuts(module: nn.Module, attention: AttentionModule, removed: list[int]) -> list[tuple]:
    """(layer name, is_output_channels, indices) removing the units `removed`."""
    head_dim = module.head_dim
    out = output_projection(attention)
    if _fused(attention):  # c_attn rows: the head's slice of each of q, k and v
        rows = [c for h in removed for c in range(h * head_dim, (h + 1) * head_dim)]
        width = module.c_attn.out_features // 3
        return [(attention.projections[0], True, [part * width + c for part in range(3)
                                                  for c in rows]), (out, False, rows)]
    kv = [c for g in removed for c in range(g * head_dim, (g + 1) * head_dim)]
    query_width = head_dim * module.num_key_value_groups
    queries = [c for g in removed for c in range(g * query_width, (g + 1) * query_width)]
    q, k, v = attention.projections
    return [(q, True, queries), (k, True, kv), (v, True, kv), (out, False, queries)]


def removed_groups(groups: int, ratio: float) -> int:
    """How many of `groups` a ratio removes: as for whole heads, at least one is kept."""
    return min(groups - 1, math.ceil(ratio * groups)) if ratio > 0 else 0


def prune_groups(model: nn.Module, head_ratios: dict[str, float]) -> list[list]:
    """Remove the weakest units of each attention module cut here, at the ratio given for any
    of its projections in `head_ratios` (as for other attention); returns history entries."""
    modules = dict(model.named_modules())
    history = []
    for attention in grouped_query_attention(model):
        module = modules[attention.name]
        units = _units(module, attention)
        ratio = max((float(head_ratios[n]) for n in attention.projections if n in head_ratios),
                    default=0.0)
        count = removed_groups(units, ratio)
        if count == 0:
            continue
        weakest = sorted(torch.argsort(_unit_norms(module, attention, units))[:count].tolist())
        entries = [[name, is_out, indices, LAYER_ONLY]
                   for name, is_out, indices in _cuts(module, attention, weakest)]
        apply_layer_entries(model, entries)
        history += entries
    return history


def apply_layer_entries(model: nn.Module, entries: list[list]) -> None:
    """Apply single-layer history entries (output rows or input columns of a Linear)."""
    modules = dict(model.named_modules())
    for name, is_out, indices, _ in entries:
        prune = tp.prune_linear_out_channels if is_out else tp.prune_linear_in_channels
        prune(modules[name], list(indices))

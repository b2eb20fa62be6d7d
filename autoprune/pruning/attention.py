"""Attention heads: tell Torch-Pruning where they are, and fix the modules afterwards.

Torch-Pruning removes whole heads from the query/key/value projections when it is told each
projection's head count. The attention modules themselves reshape with head counts kept as
plain attributes (timm's `num_heads`/`attn_dim`, HuggingFace BERT's
`num_attention_heads`/`all_head_size`, ViT's `num_attention_heads`, GPT-2's `num_heads`/`split_size`), which no graph tracer sees; after pruning, and after
replaying a pruning history, `sync_heads` sets them from the projections' new widths.
Head dimensions are never cut: only whole heads go, so `head_dim` stays valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn


@dataclass(frozen=True)
class AttentionKind:
    """How to find one family of attention modules and keep its attributes consistent."""

    name: str
    matches: Callable[[nn.Module], bool]
    projection_names: tuple[str, ...]   # child Linear layers carrying the heads
    outputs_per_projection: int         # 3 for a fused qkv projection, else 1
    head_dim: Callable[[nn.Module], int]
    set_heads: Callable[[nn.Module, int], None]
    by_torch_pruning: bool = True  # False: grouped_query.py cuts its heads
    output_projection: str = ""    # the layer reading the heads (cut by grouped_query.py)


def _is_linear(module, name: str) -> bool:
    """A Linear child, or a transformers Conv1D (a Linear with its weight transposed)."""
    child = getattr(module, name, None)
    return isinstance(child, nn.Linear) or type(child).__name__ == "Conv1D"


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.nf


def _set_timm_heads(module: nn.Module, heads: int) -> None:
    module.num_heads = heads
    module.attn_dim = heads * module.head_dim


def _set_bert_heads(module: nn.Module, heads: int) -> None:
    module.num_attention_heads = heads
    module.all_head_size = heads * module.attention_head_size


def _set_projection_heads(module: nn.Module, heads: int) -> None:
    module.num_attention_heads = heads  # the forward reshapes with -1 heads of head_dim


def _set_distilbert_heads(module: nn.Module, heads: int) -> None:
    module.n_heads = heads


def _set_grouped_heads(module: nn.Module, groups: int) -> None:
    """Llama-style attention reshapes with -1 heads and keeps its query-per-key/value ratio
    (`num_key_value_groups`) when whole groups go; transformers 4 also kept the counts."""
    if hasattr(module, "num_key_value_heads"):
        module.num_key_value_heads = groups
    if hasattr(module, "num_heads"):
        module.num_heads = groups * module.num_key_value_groups


def _is_grouped_query(module: nn.Module) -> bool:
    return (all(_is_linear(module, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and isinstance(getattr(module, "head_dim", None), int)
            and isinstance(getattr(module, "num_key_value_groups", None), int)
            and _out_features(module.q_proj)
            == _out_features(module.k_proj) * module.num_key_value_groups)


def _set_gpt2_heads(module: nn.Module, heads: int) -> None:
    module.num_heads = heads
    module.split_size = heads * module.head_dim  # q, k and v are split off c_attn's output


ATTENTION_KINDS = (
    # timm: vision_transformer / deit / eva-style `Attention` with one fused qkv Linear.
    AttentionKind(
        name="timm fused qkv",
        matches=lambda m: (_is_linear(m, "qkv") and _is_linear(m, "proj")
                           and isinstance(getattr(m, "num_heads", None), int)
                           and isinstance(getattr(m, "head_dim", None), int)
                           and hasattr(m, "attn_dim")),
        projection_names=("qkv",), outputs_per_projection=3,
        head_dim=lambda m: m.head_dim, set_heads=_set_timm_heads),
    # HuggingFace BERT-style self-attention (BERT, RoBERTa, ELECTRA, ...): separate q, k, v.
    AttentionKind(
        name="HuggingFace query/key/value",
        matches=lambda m: (all(_is_linear(m, n) for n in ("query", "key", "value"))
                           and isinstance(getattr(m, "num_attention_heads", None), int)
                           and isinstance(getattr(m, "attention_head_size", None), int)),
        projection_names=("query", "key", "value"), outputs_per_projection=1,
        head_dim=lambda m: m.attention_head_size, set_heads=_set_bert_heads),
    # HuggingFace Llama-style decoders (Llama, Qwen2/3, Mistral): grouped-query attention, where
    # `num_key_value_groups` query heads share one key/value head. The unit pruned is a whole
    # group: one key/value head and its query heads, so the ratio stays valid and the KV cache
    # shrinks with it (grouped_query.py; a "head" here is one group).
    AttentionKind(
        name="HuggingFace grouped-query q_proj/k_proj/v_proj",
        matches=_is_grouped_query,
        projection_names=("q_proj", "k_proj", "v_proj"), outputs_per_projection=1,
        head_dim=lambda m: m.head_dim * m.num_key_value_groups, set_heads=_set_grouped_heads,
        by_torch_pruning=False, output_projection="o_proj"),
    # HuggingFace transformers 5 encoders (ViT, ...): q_proj, k_proj, v_proj, reshaped with -1
    # heads of `head_dim`. As many key/value heads as query heads only: grouped-query
    # attention (Llama-style) needs whole key/value groups removed, which this does not do.
    AttentionKind(
        name="HuggingFace q_proj/k_proj/v_proj",
        matches=lambda m: (all(_is_linear(m, n) for n in ("q_proj", "k_proj", "v_proj"))
                           and isinstance(getattr(m, "num_attention_heads", None), int)
                           and isinstance(getattr(m, "head_dim", None), int)
                           and _out_features(m.k_proj) == _out_features(m.q_proj)),
        projection_names=("q_proj", "k_proj", "v_proj"), outputs_per_projection=1,
        head_dim=lambda m: m.head_dim, set_heads=_set_projection_heads),
    # HuggingFace DistilBERT: q_lin, k_lin, v_lin; reshapes with -1 heads, so only the count
    # attribute needs updating.
    AttentionKind(
        name="HuggingFace DistilBERT q_lin/k_lin/v_lin",
        matches=lambda m: (all(_is_linear(m, n) for n in ("q_lin", "k_lin", "v_lin"))
                           and isinstance(getattr(m, "n_heads", None), int)
                           and isinstance(getattr(m, "attention_head_size", None), int)),
        projection_names=("q_lin", "k_lin", "v_lin"), outputs_per_projection=1,
        head_dim=lambda m: m.attention_head_size, set_heads=_set_distilbert_heads),
    # HuggingFace GPT-2-style attention: fused c_attn (a Conv1D, swapped for an nn.Linear by
    # conversions.to_prunable before pruning), split into q, k, v by `split_size`. Torch-
    # Pruning does not map that split back to c_attn's rows, so grouped_query.py cuts whole
    # heads (their rows in each third of c_attn, their columns of c_proj). Cross-attention
    # (q_attn) is not handled.
    AttentionKind(
        name="HuggingFace GPT-2 c_attn",
        matches=lambda m: (_is_linear(m, "c_attn") and _is_linear(m, "c_proj")
                           and isinstance(getattr(m, "num_heads", None), int)
                           and isinstance(getattr(m, "head_dim", None), int)
                           and hasattr(m, "split_size") and not hasattr(m, "q_attn")),
        projection_names=("c_attn",), outputs_per_projection=3,
        head_dim=lambda m: m.head_dim, set_heads=_set_gpt2_heads,
        by_torch_pruning=False, output_projection="c_proj"),
)


@dataclass(frozen=True)
class AttentionModule:
    """One attention module found in a model: its name, kind and projections' names."""

    name: str
    kind: AttentionKind
    projections: tuple[str, ...]


def find_attention(model: nn.Module) -> list[AttentionModule]:
    """Every attention module of a known kind, in module order."""
    found = []
    for name, module in model.named_modules():
        for kind in ATTENTION_KINDS:
            if kind.matches(module):
                prefix = f"{name}." if name else ""
                found.append(AttentionModule(name, kind, tuple(prefix + p for p in kind.projection_names)))
                break
    return found


def head_count(model: nn.Module, attention: AttentionModule) -> int:
    """Heads the module's first projection carries now."""
    modules = dict(model.named_modules())
    module, projection = modules[attention.name], modules[attention.projections[0]]
    return _out_features(projection) // (attention.kind.outputs_per_projection
                                       * attention.kind.head_dim(module))


def pruner_head_arguments(model: nn.Module, head_ratios: dict[str, float]) -> dict:
    """Torch-Pruning keyword arguments that remove whole heads at the given ratios.

    `head_ratios` maps projection names to the fraction of heads removed; a module takes the
    ratio of any of its projections named there (q, k and v lose the same heads), else 0.
    """
    modules = dict(model.named_modules())
    num_heads, ratios = {}, {}
    for attention in find_attention(model):
        if not attention.kind.by_torch_pruning:
            continue
        heads = head_count(model, attention)
        ratio = max((float(head_ratios[n]) for n in attention.projections if n in head_ratios),
                    default=0.0)
        for name in attention.projections:
            num_heads[modules[name]] = heads
            ratios[modules[name]] = ratio
    if not num_heads:
        return {}
    return {"num_heads": num_heads, "prune_num_heads": True, "prune_head_dims": False,
            "head_pruning_ratio_dict": ratios}


def sync_heads(model: nn.Module) -> dict[str, int]:
    """Set every attention module's head attributes from its projections; returns the heads."""
    modules = dict(model.named_modules())
    heads = {}
    for attention in find_attention(model):
        count = head_count(model, attention)
        attention.kind.set_heads(modules[attention.name], count)
        heads[attention.name] = count
    return heads

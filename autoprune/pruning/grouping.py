"""Group a model's prunable widths into a few search dimensions.

Torch-Pruning's dependency graph yields *groups*: sets of layers whose channels must be
removed together. Each group is either part of a residual **stream** (its width is tied to
other blocks' outputs through an addition: the stem and a stage's skip path), the **heads** of
an attention module (see `attention.py`), or an **inner** width of one block. A search
dimension is one (stage, kind) pair and shares one ratio.

The stage of a layer comes from the family file's `stage_pattern`, or else from the
automatic rule: its module path up to and including the first numeric index
(`layer1.0.conv1` -> `layer1.0`, `blocks.2.1.conv_pw` -> `blocks.2`, `conv_head` ->
`conv_head`). A stream group takes the stage most of its layers are in. If that gives more
than `max_dimensions`, inner dimensions are merged one level up (`layer1.0` -> `layer1`).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import InvalidInputError
from ..runtime.model_io import output_tensors, run_model
from .attention import find_attention
from .grouped_query import grouped_query_attention, output_projection, projection_layers

PRUNABLE_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class PruningDimension:
    """One searched ratio: `kind` is "stream", "inner" or "heads"; `layers` are the group roots' names."""

    name: str
    kind: str
    layers: tuple[str, ...]
    channels: int
    members: tuple[str, ...] = ()  # every Conv/Linear whose width changes with it
    consumers: tuple[str, ...] = ()  # every Conv/Linear whose input width changes with it

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "layers": list(self.layers),
                "channels": self.channels}


def output_layer_names(model: nn.Module, example_inputs: Any) -> list[str]:
    """The last Conv/Linear to run in a forward pass: it produces the outputs, so it is kept."""
    order: list[str] = []
    hooks = [module.register_forward_hook(lambda mod, args, out, name=name: order.append(name))
             for name, module in model.named_modules() if isinstance(module, PRUNABLE_TYPES)]
    try:
        with torch.no_grad():
            run_model(model, example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return order[-1:]


def ignored_modules(model: nn.Module, example_inputs: Any, patterns) -> list[nn.Module]:
    """Modules never pruned: the output layer and every module whose name matches a regex."""
    keep = set(output_layer_names(model, example_inputs))
    compiled = [re.compile(p) for p in patterns]
    return [module for name, module in model.named_modules()
            if name in keep or (name and any(p.search(name) for p in compiled))]


@contextlib.contextmanager
def unwrapped_parameters_quiet():
    """Torch-Pruning warns, on every trace, about each parameter outside a layer type it
    knows (a Llama RMSNorm weight, a ViT position embedding) and then does what it says:
    the parameter follows the channels of its last dimension. Nothing a user can act on,
    printed once per trial."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        yield


def build_graph(model: nn.Module, example_inputs: Any) -> tp.DependencyGraph:
    with unwrapped_parameters_quiet():
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs,
                                                     output_transform=output_tensors)


def _is_residual_group(group) -> bool:
    # Torch-Pruning represents additions as _ElementWiseOp nodes named after the autograd op.
    return any(isinstance(dep.target.module, tp.ops._ElementWiseOp)
               and "AddBackward" in repr(dep.target.module) for dep, _ in group)


def stage_of(name: str, stage_pattern: str | None) -> str:
    """The stage a layer belongs to (see the module docstring for the rule)."""
    if stage_pattern:
        match = re.search(stage_pattern, name)
        if match:
            return match.group(1)
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0]


def _parent_stage(stage: str) -> str:
    parts = stage.split(".")
    return ".".join(parts[:-1]) if len(parts) > 1 and parts[-1].isdigit() else stage


def plan_dimensions(model: nn.Module, example_inputs: Any, stage_pattern: str | None = None,
                    max_dimensions: int = 24, ignored: list[nn.Module] | None = None,
                    graph: tp.DependencyGraph | None = None) -> list[PruningDimension]:
    """The search dimensions of `model`, in forward order; empty if nothing can be pruned."""
    names = {module: name for name, module in model.named_modules()}
    projections = {name for attention in find_attention(model) for name in attention.projections}
    graph = graph or build_graph(model, example_inputs)
    entries = []  # (stage, kind, roots, channels)
    for group in graph.get_all_groups(ignored_layers=(ignored or []) + projection_layers(model),
                                      root_module_types=list(PRUNABLE_TYPES)):
        layers = [names[dep.target.module] for dep, _ in group
                  if isinstance(dep.target.module, PRUNABLE_TYPES)
                  and graph.is_out_channel_pruning_fn(dep.handler)]
        if not layers:
            continue
        consumers = [names[dep.target.module] for dep, _ in group
                     if isinstance(dep.target.module, PRUNABLE_TYPES)
                     and graph.is_in_channel_pruning_fn(dep.handler)]
        root = group[0][0].target.module
        if projections.intersection(layers):
            kind = "heads"  # attention projections: whole heads are removed
        elif len(layers) > 1 and _is_residual_group(group):
            # an addition joining several layers' outputs; one layer's own adds (GELU's
            # tanh approximation) do not make a stream
            kind = "stream"
        else:
            kind = "inner"
        stages = Counter(stage_of(layer, stage_pattern) for layer in layers)
        stage = stages.most_common(1)[0][0] if kind == "stream" else stage_of(names[root], stage_pattern)
        channels = graph.get_out_channels(root)
        entries.append([stage, kind, names[root], channels, layers, consumers])
    ignored_names = {names[module] for module in ignored or [] if module in names}
    for attention in grouped_query_attention(model):  # cut whole (grouped_query.py)
        root = attention.projections[len(attention.projections) // 2]  # k_proj, or c_attn
        if ignored_names.isdisjoint(attention.projections):
            entries.append([stage_of(root, stage_pattern), "heads", root,
                            dict(model.named_modules())[root].out_features,
                            list(attention.projections), [output_projection(attention)]])

    def collect():
        dims: dict[str, list] = {}
        for stage, kind, root, channels, layers, consumers in entries:
            dim = dims.setdefault(f"{stage}.{kind}", [kind, [], 0, set(), set()])
            dim[1].append(root)
            dim[2] += channels or 0
            dim[3].update(layers)
            dim[4].update(consumers)
        return dims

    dims = collect()
    while len(dims) > max_dimensions:
        before = len(dims)
        for entry in entries:
            if entry[1] != "stream":
                entry[0] = _parent_stage(entry[0])
        dims = collect()
        if len(dims) == before:
            break
    order = {name: i for i, name in enumerate(names.values())}
    planned = [PruningDimension(name, kind, tuple(sorted(roots, key=order.get)), channels,
                                tuple(sorted(members, key=order.get)),
                                tuple(sorted(consumers, key=order.get)))
               for name, (kind, roots, channels, members, consumers) in dims.items()]
    return sorted(planned, key=lambda dim: order[dim.layers[0]])


def check_prunable(dimensions: list[PruningDimension], model_name: str) -> None:
    if not dimensions:
        raise InvalidInputError(
            f"{model_name} has no prunable layer: every Conv/Linear is ignored or feeds the output "
            "directly. Check `ignored_layers` and the search space's grouping.ignored_layers."
        )

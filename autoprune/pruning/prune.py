"""Apply one trial's configuration: structurally prune a copy of the model.

Torch-Pruning does the work (dependency graph, coupled layers, importance ranking); this
module maps search dimensions to its per-layer ratios and keeps the pruning history, the
plain-data record (layer names and channel indices) from which the architecture is rebuilt.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch_pruning as tp

from ..runtime.model_io import logits_of, output_tensors, run_model, to_device
from .attention import pruner_head_arguments, sync_heads
from .conversions import to_prunable
from .criteria import get_criterion
from .depth import BLOCKS, DEPTH, apply_block_entries, block_stack, prune_depth, removal_order
from .grouped_query import apply_layer_entries, projection_layers, prune_groups
from .grouping import PruningDimension, build_graph, unwrapped_parameters_quiet

# [[layer name, is_out_channel_pruning, [channel indices]], ...]: Torch-Pruning's groups; an
# entry with a fourth item "layer" prunes that layer alone (grouped_query.py), one with
# "blocks" removes whole decoder layers of a stack (depth.py)
PruningHistory = list


@dataclass
class PrunedModel:
    """A pruned copy of the model and the history that rebuilds its architecture."""

    model: nn.Module
    history: PruningHistory


def _module_ratios(model: nn.Module, dimensions: list[PruningDimension],
                   sparsity: dict[str, float]) -> dict[nn.Module, float]:
    modules = dict(model.named_modules())
    ratios = {}
    for dim in dimensions:  # heads too: Torch-Pruning skips groups whose channel ratio is 0
        ratio = float(sparsity.get(dim.name, 0.0))
        for layer in dim.layers:
            ratios[modules[layer]] = ratio
    return ratios


def _head_ratios(dimensions: list[PruningDimension], sparsity: dict[str, float]) -> dict[str, float]:
    return {layer: float(sparsity.get(dim.name, 0.0))
            for dim in dimensions if dim.kind == "heads" for layer in dim.layers}


def cross_entropy_of_logits(model: nn.Module, batch) -> torch.Tensor:
    """The default gradient loss: cross-entropy of the logits of an (inputs, targets) batch."""
    inputs, targets = batch
    return nn.functional.cross_entropy(logits_of(run_model(model, inputs)), targets)


def _accumulate_gradients(model: nn.Module, batches: Iterable, batch_loss: Callable,
                          device) -> None:
    """Backward passes for gradient-based criteria; BatchNorm statistics stay untouched."""
    model.eval()
    model.zero_grad(set_to_none=True)
    for batch in batches:
        batch_loss(model, to_device(batch, device)).backward()


def prune_copy(model: nn.Module, example_inputs: Any, dimensions: list[PruningDimension],
               sparsity: dict[str, float], criterion: str, ignored_names: Iterable[str] = (),
               round_to: int | None = None, gradient_batches: Iterable = (),
               batch_loss: Callable | None = None,
               device: str | torch.device = "cpu",
               block_order: list[int] | None = None) -> PrunedModel:
    """A structurally pruned deep copy of `model`; `model` itself is never modified.

    `sparsity` maps dimension names to the fraction of channels removed, and `DEPTH` to the
    share of decoder layers removed, in `block_order` (default: by block influence on the
    example inputs). `gradient_batches` are used only by criteria that need gradients
    (Taylor), with `batch_loss(model, batch)` (default: cross-entropy of the logits of
    (inputs, targets) batches).
    """
    pruned = to_prunable(copy.deepcopy(model).to(device))
    depth = float(sparsity.get(DEPTH, 0.0))
    if depth > 0 and block_order is None and block_stack(pruned) is not None:
        block_order = removal_order(pruned, to_device(example_inputs, device))
    spec = get_criterion(criterion)
    if spec.needs_gradients:
        _accumulate_gradients(pruned, gradient_batches, batch_loss or cross_entropy_of_logits,
                              device)
    modules = dict(pruned.named_modules())
    with unwrapped_parameters_quiet():
        pruner = tp.pruner.MetaPruner(
            pruned,
            example_inputs=to_device(example_inputs, device),
            importance=spec.make_importance(),
            pruning_ratio=0.0,
            pruning_ratio_dict=_module_ratios(pruned, dimensions, sparsity),
            ignored_layers=[modules[name] for name in ignored_names] + projection_layers(pruned),
            round_to=round_to,
            output_transform=output_tensors,
            **pruner_head_arguments(pruned, _head_ratios(dimensions, sparsity)),
        )
    pruner.step()
    history = [[name, bool(is_out), [int(i) for i in indices]]
               for name, is_out, indices in pruner.pruning_history()]
    history += prune_groups(pruned, _head_ratios(dimensions, sparsity))
    sync_heads(pruned)
    history += prune_depth(pruned, block_order or [], depth)  # last: widths use full names
    pruned.zero_grad(set_to_none=True)
    return PrunedModel(pruned, history)


def replay_history(model: nn.Module, example_inputs: Any, history: PruningHistory) -> nn.Module:
    """Prune `model` in place exactly as recorded in `history` (weights are not consulted)."""
    to_prunable(model)  # the history was recorded on a converted copy
    groups = [entry for entry in history if len(entry) == 3]
    with torch.enable_grad():  # the dependency graph is traced through autograd
        graph = build_graph(model, example_inputs)
        graph.load_pruning_history([(name, is_out, list(indices))
                                    for name, is_out, indices in groups])
    apply_layer_entries(model, [entry for entry in history
                                if len(entry) == 4 and entry[3] != BLOCKS])
    sync_heads(model)
    apply_block_entries(model, [entry for entry in history
                                if len(entry) == 4 and entry[3] == BLOCKS])
    return model


def kept_out_channels(model: nn.Module) -> dict[str, int]:
    """Output width of every Conv/Linear by name: what a pruned model really kept."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            widths[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            widths[name] = module.out_features
    return widths

"""The model as every trial sees it, set up once: converted, on its device, with its example
inputs, its search space, its search dimensions and the layers never pruned.

`search()`, the pre-flight check and the conformance suite all build it the same way, so the
setup sequence (convert, move, find ignored layers, plan dimensions) lives here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from ..errors import SearchSpaceError
from ..pruning.conversions import prepare
from ..pruning.depth import block_stack, removal_order
from ..pruning.grouping import (PruningDimension, ignored_modules, layers_feeding_channel_splits,
                                plan_dimensions, traced_graph)
from ..pruning.prune import PrunedModel, prune_copy
from ..runtime.model_io import to_device
from .space import SearchSpace


@dataclass
class PreparedModel:
    """A model ready to be pruned by configuration; build it with `PreparedModel.build`."""

    model: nn.Module                      # converted (see conversions.py), eval mode, on device
    example_inputs: Any                   # on device; pruning traces and timing run on them
    space: SearchSpace
    dimensions: list[PruningDimension]
    ignored_names: list[str]              # module names never pruned
    device: torch.device
    block_order: list[int] | None = None  # decoder layers, least influential first (depth.py)
    split_kept: tuple[str, ...] = ()      # kept unpruned: they feed a channel split (grouping.py)

    @classmethod
    def build(cls, model: nn.Module, example_inputs: Any, space: SearchSpace,
              ignored_layers: Iterable[str] = (), device: str | torch.device = "cpu"
              ) -> "PreparedModel":
        """Convert `model` (a copy where it must change), move it and its inputs to `device`,
        and plan its search dimensions, leaving out the space's and the caller's ignored layers
        (regular expressions over module names)."""
        device = torch.device(device)
        model = prepare(model.to(device).eval())
        inputs = to_device(example_inputs, device)
        ignored = ignored_modules(model, inputs, [*space.ignored_layers, *ignored_layers])
        graph = traced_graph(model, inputs)
        split_kept = [m for m in layers_feeding_channel_splits(graph) if m not in ignored]
        ignored += split_kept
        names = {module: name for name, module in model.named_modules()}
        ignored_names = [names[module] for module in ignored if module in names]
        dimensions = plan_dimensions(model, inputs, space.stage_pattern, space.max_dimensions,
                                     ignored, graph)
        block_order = None
        if space.depth[1] > 0:
            if block_stack(model) is None:
                raise SearchSpaceError(
                    f"{space.source}: sparsity.depth {list(space.depth)} removes decoder layers, "
                    f"but {type(model).__name__} has no layer stack autoprune can shorten "
                    "(HuggingFace decoders: Llama, Qwen2/3, Mistral, GPT-2); set it to [0, 0]")
            block_order = removal_order(model, inputs)
        return cls(model, inputs, space, dimensions, ignored_names, device, block_order,
                   tuple(names[module] for module in split_kept))

    def blocks_in_removal_order(self) -> list[str]:
        """Module names of the decoder layers a depth ratio removes, first to go first."""
        if self.block_order is None:
            return []
        name, _ = block_stack(self.model)
        return [f"{name}.{index}" for index in self.block_order]

    def prune(self, sparsity: dict[str, float], criterion: str = "l2",
              gradient_batches: Iterable = (), batch_loss: Callable | None = None,
              dimensions: list[PruningDimension] | None = None) -> PrunedModel:
        """A pruned copy at `sparsity` (dimension name -> ratio); the model is not changed.

        `dimensions` limits the cut to some of the dimensions (the pre-flight check's retries).
        """
        return prune_copy(self.model, self.example_inputs,
                          self.dimensions if dimensions is None else dimensions, sparsity,
                          criterion, self.ignored_names, self.space.round_to, gradient_batches,
                          batch_loss, self.device, self.block_order)

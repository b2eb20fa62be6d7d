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

from ..pruning.conversions import prepare
from ..pruning.grouping import PruningDimension, ignored_modules, plan_dimensions
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
        names = {module: name for name, module in model.named_modules()}
        ignored_names = [names[module] for module in ignored if module in names]
        dimensions = plan_dimensions(model, inputs, space.stage_pattern, space.max_dimensions,
                                     ignored)
        return cls(model, inputs, space, dimensions, ignored_names, device)

    def prune(self, sparsity: dict[str, float], criterion: str = "l2",
              gradient_batches: Iterable = (), batch_loss: Callable | None = None,
              dimensions: list[PruningDimension] | None = None) -> PrunedModel:
        """A pruned copy at `sparsity` (dimension name -> ratio); the model is not changed.

        `dimensions` limits the cut to some of the dimensions (the pre-flight check's retries).
        """
        return prune_copy(self.model, self.example_inputs,
                          self.dimensions if dimensions is None else dimensions, sparsity,
                          criterion, self.ignored_names, self.space.round_to, gradient_batches,
                          batch_loss, self.device)

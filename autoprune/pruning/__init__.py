"""Structural pruning: which widths are cut together (`grouping`), how channels are scored
(`criteria`), attention heads (`attention`), layers swapped for prunable ones
(`conversions`), and the cut itself through Torch-Pruning (`prune`)."""

from .criteria import CRITERIA, register_criterion
from .grouping import PruningDimension, plan_dimensions
from .prune import PrunedModel, prune_copy

__all__ = ["CRITERIA", "PrunedModel", "PruningDimension", "plan_dimensions", "prune_copy",
           "register_criterion"]

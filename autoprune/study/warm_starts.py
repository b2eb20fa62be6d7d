"""Warm starts derived from the model's structure and its latency model, not copied from a
result on some model and data.

A block's inner widths (and its attention heads) are private to it: cutting them changes
what that block computes and nothing else reads them. The residual stream is shared: every
block reads and writes it, and the skip connections add into it. So the derived starting
points cut the private widths first, all private kinds at the same share of their range, and
the stream only when the private cuts alone cannot reach the speed asked for. The speeds are
spread evenly (in log) between the unpruned model and the fastest configuration the space
allows, as the latency model predicts them; nothing is pruned or timed to find them.

They are enqueued like the family's uniform references (exempt from early stopping, labelled
in the report), once per study, by the process that builds the latency model.
"""

from __future__ import annotations

from typing import Callable

from ..pruning.grouping import PruningDimension
from ..runtime.latency_model import LatencyModel
from .config import config_from_params, reference_params, searched_kinds, snap_ratio
from .space import SearchSpace

SHARED_KINDS = ("stream",)  # kinds every block reads; all others are private to a block


def _at_levels(space: SearchSpace, kinds: list[str], private: float,
               shared: float) -> dict[str, float]:
    """Ratios per kind: private kinds `private` of the way up their range, shared `shared`."""
    ratios = {}
    for kind in kinds:
        low, high = space.sparsity[kind]
        level = shared if kind in SHARED_KINDS else private
        ratios[kind] = low + level * (high - low)
    return ratios


def _lowest_level(speedup_at: Callable[[float], float], goal: float,
                  steps: int = 20) -> float:
    """The smallest level in [0, 1] whose predicted speedup reaches `goal` (bisection:
    speedup never falls as a level rises, see latency_model's monotone tables)."""
    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        if speedup_at(middle) >= goal:
            high = middle
        else:
            low = middle
    return high


def fastest_speedup(space: SearchSpace, dimensions: list[PruningDimension],
                    latency_model: LatencyModel) -> float:
    """The latency model's speedup of the space's fastest width configuration (every kind at
    the top of its range; whole layers removed by depth come on top of it)."""
    kinds = [kind for kind in space.sparsity if kind in set(searched_kinds(space, dimensions))]
    params = reference_params(space, dimensions, _at_levels(space, kinds, 1.0, 1.0))
    return 1.0 / latency_model.relative(config_from_params(params, dimensions, space).sparsity)


def derived_warm_starts(space: SearchSpace, dimensions: list[PruningDimension],
                        latency_model: LatencyModel, count: int) -> list[tuple[float, dict]]:
    """`count` (predicted speedup, {kind: ratio}) starting points, private widths cut first
    (module docstring); none when the space has no private kind, nothing to reach, or
    `count` is 0."""
    searched = set(searched_kinds(space, dimensions))
    kinds = [kind for kind in space.sparsity if kind in searched]  # the file's order
    if count <= 0 or not any(kind not in SHARED_KINDS for kind in kinds):
        return []

    def speedup(ratios: dict[str, float]) -> float:
        params = reference_params(space, dimensions, ratios)  # snapped as the trial will be
        sparsity = config_from_params(params, dimensions, space).sparsity
        return 1.0 / latency_model.relative(sparsity)

    fastest = speedup(_at_levels(space, kinds, 1.0, 1.0))
    if fastest <= 1.0:
        return []
    private_only = speedup(_at_levels(space, kinds, 1.0, 0.0))
    starts: list[tuple[float, dict]] = []
    for index in range(1, count + 1):
        goal = fastest ** (index / (count + 1))
        if goal <= private_only:
            level = _lowest_level(lambda p: speedup(_at_levels(space, kinds, p, 0.0)), goal)
            ratios = _at_levels(space, kinds, level, 0.0)
        else:
            level = _lowest_level(lambda s: speedup(_at_levels(space, kinds, 1.0, s)), goal)
            ratios = _at_levels(space, kinds, 1.0, level)
        snapped = {kind: snap_ratio(ratio, *space.sparsity[kind], space.sparsity_step)
                   for kind, ratio in ratios.items()}
        if all(snapped != ratios_seen for _, ratios_seen in starts):
            starts.append((speedup(snapped), snapped))
    return starts

"""What one trial proposes: per-dimension sparsity, criterion, distillation and learning rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna

from ..pruning.depth import DEPTH
from ..pruning.grouping import PruningDimension
from ..runtime.finetune import Distillation
from .space import SearchSpace

SPARSITY_PREFIX = "sparsity:"
LEVEL_PREFIX = "sparsity_level:"   # one overall level per kind of width
LEVEL_PARAM = "sparsity_level"     # one level for every kind (studies made before per-kind levels)
SHIFT_PREFIX = "sparsity_shift:"


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space, as plain data."""

    sparsity: dict[str, float]  # dimension name -> ratio; DEPTH -> share of layers removed
    criterion: str
    distillation: Distillation
    lr: float
    precision: str = "fp32"  # "int8": quantized after fine-tuning (runtime/quantize.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sparsity_range(space: SearchSpace, dim: PruningDimension) -> tuple[float, float]:
    return space.sparsity[dim.kind]


def _searched(space: SearchSpace, dimensions: list[PruningDimension]) -> list[PruningDimension]:
    """The dimensions whose kind has a range to search (the others stay at their low end)."""
    return [dim for dim in dimensions
            if _sparsity_range(space, dim)[1] > _sparsity_range(space, dim)[0]]


def _draws_level(space: SearchSpace, dimensions: list[PruningDimension]) -> bool:
    return space.sparsity_spread is not None and bool(_searched(space, dimensions))


def searched_kinds(space: SearchSpace, dimensions: list[PruningDimension]) -> list[str]:
    return list(dict.fromkeys(dim.kind for dim in _searched(space, dimensions)))


def _spread(space: SearchSpace) -> float:
    return snap_ratio(space.sparsity_spread, 0.0, space.sparsity_spread, space.sparsity_step)


def _shifted_sparsity(space: SearchSpace, dimensions: list[PruningDimension],
                      levels: dict[str, float], shifts: dict[str, float]) -> dict[str, float]:
    """Each dimension's ratio: its kind's level plus the dimension's shift, kept in range."""
    sparsity = {}
    for dim in dimensions:
        low, high = _sparsity_range(space, dim)
        shifted = levels.get(dim.kind, low) + shifts.get(dim.name, 0.0)
        sparsity[dim.name] = (snap_ratio(shifted, low, high, space.sparsity_step)
                              if high > low else low)
    return sparsity


NO_DISTILLATION = Distillation(alpha=0.0, temperature=1.0)
PRECISION_PARAM = "precision"  # what a user's train_step records


def suggest_config(trial: optuna.Trial, space: SearchSpace,
                   dimensions: list[PruningDimension], distillation: bool = True) -> TrialConfig:
    """Ask the trial's sampler for every searched value (the distillation weight and
    temperature only when `distillation`: a user's own training step owns its loss).

    With `sparsity.spread` set, a trial draws one level per kind of width (residual stream,
    inner widths, heads) and a shift of at most `spread` per dimension rather than independent
    ratios: independent draws over many dimensions almost always leave one layer cut far
    deeper than the rest, a bottleneck that costs accuracy without buying speed, so random and
    early TPE trials land far from the front. The kinds get levels of their own because they
    trade accuracy for speed differently (on a ResNet the stream is costly to cut, inner widths
    cheap). Uniform pruning is the point with every level at the ratio and every shift at 0.
    """
    step = space.sparsity_step
    if not _draws_level(space, dimensions):
        sparsity = {}
        for dim in dimensions:
            low, high = _sparsity_range(space, dim)
            sparsity[dim.name] = trial.suggest_float(f"{SPARSITY_PREFIX}{dim.name}", low, high,
                                                     step=step) if high > low else low
    else:
        levels = {kind: trial.suggest_float(f"{LEVEL_PREFIX}{kind}", *space.sparsity[kind],
                                            step=step)
                  for kind in searched_kinds(space, dimensions)}
        spread = _spread(space)
        shifts = {dim.name: trial.suggest_float(f"{SHIFT_PREFIX}{dim.name}", -spread, spread,
                                                step=step) if spread > 0 else 0.0
                  for dim in _searched(space, dimensions)}
        sparsity = _shifted_sparsity(space, dimensions, levels, shifts)
    if _searches_depth(space):
        sparsity[DEPTH] = trial.suggest_float(DEPTH, *space.depth, step=step)
    criterion = trial.suggest_categorical("criterion", list(space.criteria))
    kd = (Distillation(trial.suggest_float("kd_alpha", *space.kd_alpha),
                       trial.suggest_float("kd_temperature", *space.kd_temperature))
          if distillation else NO_DISTILLATION)
    lr = trial.suggest_float("lr", *space.lr, log=True)
    precision = (trial.suggest_categorical(PRECISION_PARAM, list(space.precisions))
                 if len(space.precisions) > 1 else space.precisions[0])
    return TrialConfig(sparsity, criterion, kd, lr, precision)


def _searches_depth(space: SearchSpace) -> bool:
    return space.depth[1] > space.depth[0]


def snap_ratio(value: float, low: float, high: float, step: float) -> float:
    """`value` on the grid Optuna draws from (`low` + multiples of `step`), within range."""
    snapped = low + round((value - low) / step) * step
    return round(min(high, max(low, snapped)), 6)


def reference_params(space: SearchSpace, dimensions: list[PruningDimension],
                     ratios: dict[str, float]) -> dict[str, Any]:
    """Optuna params of a hand-picked reference trial: every dimension of a kind pruned at
    `ratios[kind]` (kinds not named stay at their range's low end).

    Ratios are clipped to each kind's range, so a family that caps the residual stream lower
    gets that cap; the criterion is L2 magnitude when the space offers it, the learning rate
    the log-scale middle of its range, distillation alpha 0.5 at temperature 4.
    """
    params: dict[str, Any] = {}
    searched = _searched(space, dimensions)
    step = space.sparsity_step
    if not _draws_level(space, dimensions):
        for dim in searched:
            low, high = _sparsity_range(space, dim)
            params[f"{SPARSITY_PREFIX}{dim.name}"] = snap_ratio(ratios.get(dim.kind, low), low,
                                                                high, step)
    else:
        for kind in searched_kinds(space, dimensions):
            low, high = space.sparsity[kind]
            params[f"{LEVEL_PREFIX}{kind}"] = snap_ratio(ratios.get(kind, low), low, high, step)
        if _spread(space) > 0:
            params.update({f"{SHIFT_PREFIX}{dim.name}": 0.0 for dim in searched})
    if _searches_depth(space):  # references keep every layer the space allows
        params[DEPTH] = space.depth[0]
    params["criterion"] = "l2" if "l2" in space.criteria else space.criteria[0]
    params["kd_alpha"] = min(max(0.5, space.kd_alpha[0]), space.kd_alpha[1])
    params["kd_temperature"] = min(max(4.0, space.kd_temperature[0]), space.kd_temperature[1])
    params["lr"] = reference_lr(space)
    if len(space.precisions) > 1:  # the references are what fp32 pruning alone gives
        params[PRECISION_PARAM] = "fp32"
    return params


def reference_lr(space: SearchSpace) -> float:
    """The learning rate of reference trials: the middle of the space's range on a log scale."""
    low, high = space.lr
    return (low * high) ** 0.5


def uniform_params(space: SearchSpace, dimensions: list[PruningDimension],
                   ratio: float) -> dict[str, Any]:
    """Optuna params of plain uniform pruning at `ratio` (see `reference_params`)."""
    return reference_params(space, dimensions, {kind: ratio for kind in space.sparsity})


def config_from_params(params: dict[str, Any], dimensions: list[PruningDimension],
                       space: SearchSpace) -> TrialConfig:
    """Rebuild the `TrialConfig` of a finished trial from its stored Optuna params.

    The params say which parameterisation drew them (a level per kind and shifts, one level
    for all kinds and shifts, or one ratio per dimension), so a study keeps loading whichever
    way its space was written.
    """
    shifts = {key[len(SHIFT_PREFIX):]: value for key, value in params.items()
              if key.startswith(SHIFT_PREFIX)}
    levels = {key[len(LEVEL_PREFIX):]: value for key, value in params.items()
              if key.startswith(LEVEL_PREFIX)}
    if LEVEL_PARAM in params:  # one level for every kind
        levels = {kind: params[LEVEL_PARAM] for kind in space.sparsity}
    if levels:
        sparsity = _shifted_sparsity(space, dimensions, levels, shifts)
    else:
        sparsity = {dim.name: params.get(f"{SPARSITY_PREFIX}{dim.name}",
                                         _sparsity_range(space, dim)[0]) for dim in dimensions}
    if DEPTH in params:
        sparsity[DEPTH] = params[DEPTH]
    return TrialConfig(sparsity, params["criterion"],
                       Distillation(params["kd_alpha"], params["kd_temperature"]), params["lr"],
                       params.get(PRECISION_PARAM, space.precisions[0]))

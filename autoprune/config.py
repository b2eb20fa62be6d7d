"""What one trial proposes: per-dimension sparsity, criterion, distillation and learning rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna

from .finetune import Distillation
from .grouping import PruningDimension
from .space import SearchSpace

SPARSITY_PREFIX = "sparsity:"


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space, as plain data."""

    sparsity: dict[str, float]
    criterion: str
    distillation: Distillation
    lr: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sparsity_range(space: SearchSpace, dim: PruningDimension) -> tuple[float, float]:
    return space.sparsity[dim.kind]


def suggest_config(trial: optuna.Trial, space: SearchSpace,
                   dimensions: list[PruningDimension]) -> TrialConfig:
    """Ask the trial's sampler for every searched value."""
    sparsity = {}
    for dim in dimensions:
        low, high = _sparsity_range(space, dim)
        sparsity[dim.name] = trial.suggest_float(f"{SPARSITY_PREFIX}{dim.name}", low, high,
                                                 step=space.sparsity_step) if high > low else low
    criterion = trial.suggest_categorical("criterion", list(space.criteria))
    alpha = trial.suggest_float("kd_alpha", *space.kd_alpha)
    temperature = trial.suggest_float("kd_temperature", *space.kd_temperature)
    lr = trial.suggest_float("lr", *space.lr, log=True)
    return TrialConfig(sparsity, criterion, Distillation(alpha, temperature), lr)


def _snap(value: float, low: float, high: float, step: float) -> float:
    snapped = low + round((value - low) / step) * step
    return round(min(high, max(low, snapped)), 6)


def uniform_params(space: SearchSpace, dimensions: list[PruningDimension],
                   ratio: float) -> dict[str, Any]:
    """Optuna params of plain uniform pruning at `ratio`, to enqueue as a reference trial.

    The ratio is clipped to each kind's range, so a family that caps the residual stream
    lower gets that cap; the criterion is L2 magnitude when the space offers it, the learning rate the
    log-scale middle of its range.
    """
    params: dict[str, Any] = {}
    for dim in dimensions:
        low, high = _sparsity_range(space, dim)
        if high > low:
            params[f"{SPARSITY_PREFIX}{dim.name}"] = _snap(ratio, low, high, space.sparsity_step)
    params["criterion"] = "l2" if "l2" in space.criteria else space.criteria[0]
    params["kd_alpha"] = min(max(0.5, space.kd_alpha[0]), space.kd_alpha[1])
    params["kd_temperature"] = min(max(4.0, space.kd_temperature[0]), space.kd_temperature[1])
    low, high = space.lr
    params["lr"] = (low * high) ** 0.5  # the middle of the range on the log scale
    return params


def config_from_params(params: dict[str, Any], dimensions: list[PruningDimension],
                       space: SearchSpace) -> TrialConfig:
    """Rebuild the `TrialConfig` of a finished trial from its stored Optuna params."""
    sparsity = {dim.name: params.get(f"{SPARSITY_PREFIX}{dim.name}",
                                     _sparsity_range(space, dim)[0]) for dim in dimensions}
    return TrialConfig(sparsity, params["criterion"],
                       Distillation(params["kd_alpha"], params["kd_temperature"]), params["lr"])

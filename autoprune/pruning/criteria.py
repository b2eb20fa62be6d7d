"""Pruning criteria: a registry of names to Torch-Pruning importance estimators.

Adding a criterion is one decorated function here (or in a user's module): it returns a
fresh importance object, and says whether it needs gradients from a few training batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn
import torch_pruning as tp


@dataclass(frozen=True)
class Criterion:
    """A named way to rank channels; `needs_gradients` asks for backward passes first."""

    name: str
    make_importance: Callable[[], object]
    needs_gradients: bool = False
    description: str = ""
    needs_modules: tuple[type, ...] = ()   # scores nothing in a model without one of these


CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, needs_gradients: bool = False,
                       needs_modules: tuple[type, ...] = ()):
    """Decorator: register a zero-argument factory of a Torch-Pruning importance under `name`."""

    def decorate(factory: Callable[[], object]) -> Callable[[], object]:
        if name in CRITERIA:
            raise ValueError(f"pruning criterion {name!r} is already registered")
        CRITERIA[name] = Criterion(name, factory, needs_gradients,
                                   (factory.__doc__ or "").strip(), needs_modules)
        return factory

    return decorate


def usable_criteria(model: nn.Module, names) -> tuple[str, ...]:
    """The criteria in `names` that can rank `model`'s channels (bn_scale needs BatchNorm):
    Torch-Pruning silently skips groups a criterion cannot score, so a trial would prune nothing."""
    present = {type(module) for module in model.modules()}
    return tuple(name for name in names
                 if not CRITERIA[name].needs_modules
                 or any(issubclass(t, CRITERIA[name].needs_modules) for t in present))


def get_criterion(name: str) -> Criterion:
    try:
        return CRITERIA[name]
    except KeyError:
        raise KeyError(f"unknown pruning criterion {name!r}; known: {', '.join(CRITERIA)}") from None


@register_criterion("l1")
def _l1():
    """L1 norm of each channel's weights across the coupled layers."""
    return tp.importance.GroupMagnitudeImportance(p=1)


@register_criterion("l2")
def _l2():
    """L2 norm of each channel's weights across the coupled layers."""
    return tp.importance.GroupMagnitudeImportance(p=2)


@register_criterion("taylor", needs_gradients=True)
def _taylor():
    """First-order Taylor: |weight x gradient|, gradients from a few training batches."""
    return tp.importance.GroupTaylorImportance()


@register_criterion("bn_scale", needs_modules=(nn.modules.batchnorm._BatchNorm,))
def _bn_scale():
    """Network slimming: |gamma| of the BatchNorm after each channel."""
    return tp.importance.BNScaleImportance()


@register_criterion("lamp")
def _lamp():
    """LAMP: magnitude rescaled by the magnitudes of the channels kept after it."""
    return tp.importance.LAMPImportance(p=2)


@register_criterion("random")
def _random():
    """Random ranking: the control every other criterion should beat."""
    return tp.importance.RandomImportance()

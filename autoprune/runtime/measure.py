"""Hardware measurements of a model on a target (see targets/): latency, memory, MACs, params.

A trial's latency is never one reading on its own. The pruned model and the unpruned one are
timed in the same process, block by block in turn (`paired_latency`); the median of the
per-round ratios is the trial's speedup, and its latency is that speedup applied to the
study's reference latency of the unpruned model. A shared machine's load slows both models of
a round alike, so the ratio holds where a lone reading would not.

Memory is the bytes of parameters and buffers plus the target's peak of activations during
one inference.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Callable, Hashable

import torch.nn as nn
import torch_pruning as tp

from ..pruning.conversions import conv1d_counted_as_linear
from ..targets.base import Target

MB = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    """What one model costs on the target, at the example batch size."""

    latency_ms: float
    latency_spread_ms: float  # interquartile range over the timed rounds
    memory_mb: float
    weights_mb: float
    activations_mb: float
    params: int
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedLatency:
    """A model timed against a reference in the same rounds."""

    speedup: float            # median over rounds of reference time / model time
    speedup_spread: float     # interquartile range of the per-round speedups
    model_ms: float           # medians of the rounds, as read now (drift included)
    reference_ms: float
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_macs_and_params(model: nn.Module, example_inputs: Any) -> tuple[int, int]:
    """MACs of one forward pass at the example batch size, and the parameter count."""
    with conv1d_counted_as_linear():
        macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs), int(params)


def weight_bytes(model: nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def interquartile_range(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return quartiles[2] - quartiles[0]


def latency_ms(model: nn.Module, inputs: Any, target: Target, rounds: int = 7,
               block_seconds: float = 0.05) -> tuple[float, float]:
    """Median latency of one inference in milliseconds over `rounds` blocks, and their IQR."""
    samples = target.time_interleaved({"model": target.runnable(model, inputs)}, rounds,
                                      block_seconds)["model"]
    return statistics.median(samples), interquartile_range(samples)


def per_round_speedups(model_ms: list[float], reference_ms: list[float]) -> list[float]:
    """Reference time / model time, round by round (both timed in the same rounds)."""
    return [ref / own for own, ref in zip(model_ms, reference_ms)]


def _ratios(samples: dict[str, list[float]]) -> list[float]:
    return per_round_speedups(samples["model"], samples["reference"])


def speedup_settled(samples: dict[str, list[float]], tolerance: float) -> bool:
    """Whether the median per-round speedup is known to about `tolerance` (relative standard
    error, from the interquartile range as a robust spread)."""
    ratios = _ratios(samples)
    if len(ratios) < 3:
        return False
    sigma = interquartile_range(ratios) / 1.349
    return 1.2533 * sigma / len(ratios) ** 0.5 <= tolerance * statistics.median(ratios)


def paired_latency(model: nn.Module, reference: nn.Module, inputs: Any, target: Target,
                   rounds: int = 7, block_seconds: float = 0.02, max_rounds: int | None = None,
                   tolerance: float = 0.03) -> PairedLatency:
    """`model` timed against `reference`, interleaved round by round (see module docstring).

    With `max_rounds` above `rounds`, timing goes on while the speedup is not yet known to
    `tolerance`: a quiet machine stops at `rounds`, a loaded one pays for the certainty.
    """
    samples = target.time_interleaved({"model": target.runnable(model, inputs),
                                       "reference": target.runnable(reference, inputs)},
                                      rounds, block_seconds,
                                      settled=lambda s: speedup_settled(s, tolerance),
                                      max_rounds=max_rounds)
    ratios = _ratios(samples)
    return PairedLatency(speedup=statistics.median(ratios),
                         speedup_spread=interquartile_range(ratios),
                         model_ms=statistics.median(samples["model"]),
                         reference_ms=statistics.median(samples["reference"]),
                         rounds=len(ratios))


def measure_cost(model: nn.Module, inputs: Any, target: Target,
                 latency: tuple[float, float]) -> Measurement:
    """Memory, MACs and parameters of `model`, with a latency (median, spread) given."""
    model = model.eval()
    macs, params = count_macs_and_params(model, inputs)
    weights = weight_bytes(model)
    activations = target.activation_peak_bytes(model, inputs)
    return Measurement(latency_ms=latency[0], latency_spread_ms=latency[1],
                       memory_mb=(weights + activations) / MB, weights_mb=weights / MB,
                       activations_mb=activations / MB, params=params, macs=macs)


def measure(model: nn.Module, inputs: Any, target: Target, rounds: int = 7,
            block_seconds: float = 0.05) -> Measurement:
    """Latency (timed alone), memory, MACs and parameters of `model` on `target`."""
    return measure_cost(model, inputs, target,
                        latency_ms(model.eval(), inputs, target, rounds, block_seconds))


def interleaved_latency_ms(models: dict[Hashable, nn.Module], inputs: Any, target: Target,
                           rounds: int = 5, block_seconds: float = 0.05,
                           on_round: Callable[[], None] | None = None) -> dict[Hashable, float]:
    """Median latency of each model over `rounds` rounds, timed in turn within each round.

    Interleaving spreads a shared machine's drift over every model alike, so the ratio of
    two results is not a lucky outlier of one of them.
    """
    runnables = {key: target.runnable(model, inputs) for key, model in models.items()}
    samples = target.time_interleaved(runnables, rounds, block_seconds, on_round=on_round)
    return {key: statistics.median(values) for key, values in samples.items()}


def interleaved_against_reference(models: dict[Hashable, nn.Module], reference: nn.Module,
                                  inputs: Any, target: Target, rounds: int = 5,
                                  block_seconds: float = 0.05,
                                  on_round: Callable[[], None] | None = None
                                  ) -> dict[Hashable, float]:
    """Several models and a reference, interleaved round by round: each model's latency is
    the reference's median divided by the model's median per-round speedup (a ratio within
    one round, as in `paired_latency`); the reference's own median is under "reference"."""
    runnables = {"reference": target.runnable(reference, inputs),
                 **{("model", key): target.runnable(model, inputs)
                    for key, model in models.items()}}
    samples = target.time_interleaved(runnables, rounds, block_seconds, on_round=on_round)
    reference_ms = statistics.median(samples["reference"])
    latencies: dict[Hashable, float] = {"reference": reference_ms}
    for key in models:
        speedups = per_round_speedups(samples[("model", key)], samples["reference"])
        latencies[key] = reference_ms / statistics.median(speedups)
    return latencies

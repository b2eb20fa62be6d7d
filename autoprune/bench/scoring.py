"""How the benchmark scores what each method produced: fronts of test accuracy against
measured speedup, their hypervolume, the accuracy a user gets at matched speedups, and the
mean, min and max over repeats. Pure computations on `BenchModel` records, no model is run."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch.nn as nn

METHODS = ("uniform", "uniform-int8", "global", "random", "fastnas", "autoprune-fp32",
           "autoprune-gp", "autoprune-derived", "autoprune")
INT8_METHODS = ("uniform-int8",)  # need a target that runs int8 (autoprune searches it there)
MATCHED_SPEEDUPS = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


@dataclass
class BenchModel:
    """One model a method produced, with what it cost and, after `time_all`, how it runs."""

    method: str
    label: str
    model: nn.Module = field(repr=False)
    seconds: float                 # wall time to produce it (prune/search + fine-tune + eval)
    overhead_seconds: float        # of which neither fine-tuning nor evaluation
    finished_seconds: float = 0.0  # when it was ready, counted from the method's start
    finetune_steps: int = 0
    macs: int = 0
    params: int = 0
    accuracy: float = 0.0          # on the test split
    select_accuracy: float = 0.0   # on the selection split (what the method chooses by)
    latency_ms: float = 0.0
    precision: str = "fp32"
    # an int8 model's fp32 twin (the same pruned weights before quantization), timed and
    # scored beside it: what quantization bought and cost
    fp32_model: nn.Module | None = field(default=None, repr=False)
    fp32_accuracy: float | None = None
    fp32_latency_ms: float | None = None

    def figures(self) -> dict[str, Any]:
        """Every field but the models (`asdict` would deep-copy them first)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("model", "fp32_model")}


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (speedup, accuracy) points, by increasing speedup."""
    kept = [p for p in points
            if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(kept))


def hypervolume_2d(points: list[tuple[float, float]]) -> float:
    """Area dominated by (speedup, accuracy) points above the reference (speedup 1, accuracy 0),
    with speedup mapped to the time saved, 1 - 1/speedup, so the area lies in [0, 1]."""
    area, last_x = 0.0, 0.0
    for speedup, accuracy in front(points):  # faster and faster, less and less accurate
        x = max(0.0, 1.0 - 1.0 / speedup)
        if x > last_x:
            area += (x - last_x) * accuracy  # the strip only this point (and slower) reach
            last_x = x
    return area


def accuracy_at(points: list[tuple[float, float]], speedup: float) -> float | None:
    """Accuracy the front reaches at `speedup`: linear interpolation between the two front
    points around it; a point at least as fast counts; None beyond the front's fastest."""
    points = front(points)
    if not points or speedup > points[-1][0]:
        return None
    for (s0, a0), (s1, a1) in zip(points, points[1:]):
        if s0 <= speedup <= s1:
            return a0 + (a1 - a0) * (speedup - s0) / (s1 - s0) if s1 > s0 else max(a0, a1)
    return points[0][1]  # below the slowest front point: that point already does it


def offered(models: list[BenchModel], base: BenchModel, floor: float = 0.0) -> list[BenchModel]:
    """The models a method would offer a user: at or above the accuracy `floor` on the
    selection split (autoprune's front floor, applied to every method), and none of its own
    is faster and better there. Every method is filtered alike, so none gets to choose on the
    test split."""
    def speedup(m):
        return base.latency_ms / m.latency_ms
    models = [m for m in models if m.select_accuracy >= floor]
    return [m for m in models
            if not any(speedup(o) >= speedup(m) and o.select_accuracy >= m.select_accuracy
                       and (speedup(o), o.select_accuracy) != (speedup(m), m.select_accuracy)
                       for o in models)]


def picked_at(models: list[BenchModel], base: BenchModel, speedup: float,
              floor: float = 0.0) -> float | None:
    """Test accuracy of the model a user would pick for `speedup`: the best on the selection
    split among those at least that fast (the faster one on a tie) and at or above the
    `floor` there; None if none is."""
    fast = [m for m in models if base.latency_ms / m.latency_ms >= speedup
            and m.select_accuracy >= floor]
    if not fast:
        return None
    return max(fast, key=lambda m: (m.select_accuracy, -m.latency_ms)).accuracy


def share_to_reach(models: list[BenchModel], base: BenchModel, target: float,
                   wall_seconds: float, floor: float = 0.0) -> float | None:
    """The fraction of its wall clock a method needed before the models it had finished so far
    reached hypervolume `target` (test accuracy, offered models); None if it never did.

    A search's bench models are its final front only, so earlier fronts are under-counted
    (trials dominated later are not among them): the fraction is an upper bound.
    """
    for finished in sorted({m.finished_seconds for m in models}):
        ready = [m for m in models if m.finished_seconds <= finished]
        points = [(base.latency_ms / m.latency_ms, m.accuracy) for m in offered(ready, base, floor)]
        if hypervolume_2d(points) >= target:
            return min(1.0, finished / wall_seconds) if wall_seconds > 0 else 1.0
    return None


def int8_figures(models: list[BenchModel]) -> dict[str, Any]:
    """What int8 added on top of pruning, over a method's int8 models: the median speedup of
    the int8 graph over its fp32 twin (timed interleaved with it) and the median accuracy it
    lost (fp32 minus int8 test accuracy); None without int8 models."""
    pairs = [m for m in models if m.precision == "int8" and m.fp32_latency_ms]
    if not pairs:
        return {"int8_models": 0, "int8_speedup_over_fp32_median": None,
                "int8_accuracy_cost_median": None}
    gains = sorted(m.fp32_latency_ms / m.latency_ms for m in pairs)
    costs = sorted(m.fp32_accuracy - m.accuracy for m in pairs)
    return {"int8_models": len(pairs), "int8_speedup_over_fp32_median": _median(gains),
            "int8_accuracy_cost_median": _median(costs)}


def _median(values: list[float]) -> float:
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


LATENCY_FIGURES = ("front_speedup_within_10pct", "front_reading_within_10pct",
                   "prediction_median_abs_error", "prediction_within_10pct",
                   "latency_model_seconds")


def summarise(models: list[BenchModel], base: BenchModel,
              walls: dict[str, float] | None = None,
              latency: dict[str, dict] | None = None, floor: float = 0.0) -> dict[str, Any]:
    """Per method: front, hypervolume, accuracy at matched speedups, speedup per MAC cut, overhead.

    Front, hypervolume and interpolated accuracies use the test accuracies of the models the
    method offers (`offered`); `picked_at_speedup` is the single model a user would pick.
    """
    summary = {}
    uniform = [m for m in models if m.method == "uniform"]
    uniform_hv = hypervolume_2d([(base.latency_ms / m.latency_ms, m.accuracy)
                                 for m in offered(uniform, base, floor)]) if uniform else None
    for method in METHODS:
        mine = [m for m in models if m.method == method]
        if not mine:
            continue
        shown = offered(mine, base, floor)
        points = [(base.latency_ms / m.latency_ms, m.accuracy) for m in shown]
        efficiency = sorted((base.latency_ms / m.latency_ms) / (base.macs / m.macs) for m in mine)
        seconds = sum(m.seconds for m in mine)
        wall = (walls or {}).get(method, seconds)
        summary[method] = {
            "models": len(mine),
            "offered": len(shown),
            "offered_int8": sum(m.precision == "int8" for m in shown),
            "front": [{"speedup": s, "accuracy": a} for s, a in front(points)],
            "hypervolume": hypervolume_2d(points),
            "accuracy_at_speedup": {f"{s:g}x": accuracy_at(points, s) for s in MATCHED_SPEEDUPS},
            "picked_at_speedup": {f"{s:g}x": picked_at(mine, base, s, floor)
                                  for s in MATCHED_SPEEDUPS},
            "speedup_per_mac_reduction_median": efficiency[len(efficiency) // 2],
            "wall_seconds": wall,
            # the fraction of its wall clock after which it matched the whole uniform sweep
            "budget_to_uniform_hypervolume": None if uniform_hv is None else share_to_reach(
                mine, base, uniform_hv, wall, floor),
            # of the trials' (or sweep points') time, the share that is neither fine-tuning
            # nor evaluation: pruning, measuring, sampling, storage, checkpoints
            "overhead_share": sum(m.overhead_seconds for m in mine) / seconds if seconds else 0.0,
            # searches only (bench.run.latency_figures): trust in the latencies they saw
            **{key: (latency or {}).get(method, {}).get(key) for key in LATENCY_FIGURES},
            **int8_figures(mine),
        }
    return summary


def _spread(values: list[float | None]) -> dict[str, Any] | None:
    """Mean, min and max over repeats; None unless every repeat has a value."""
    if not values or any(v is None for v in values):
        return None
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, each figure of `summarise` as mean/min/max over the repeats."""
    merged = {}
    for method in METHODS:
        per_run = [run["methods"][method] for run in runs if method in run["methods"]]
        if not per_run:
            continue
        first = per_run[0]
        merged[method] = {  # a figure some repeat lacks (None) is None
            "repeats": len(per_run),
            **{key: _spread([r.get(key) for r in per_run])
               for key in ("hypervolume", "speedup_per_mac_reduction_median", "overhead_share",
                           "wall_seconds", *LATENCY_FIGURES)},
            # over the repeats where it matched uniform at all (how many: the next key)
            "budget_to_uniform_hypervolume": _spread(
                [r["budget_to_uniform_hypervolume"] for r in per_run
                 if r.get("budget_to_uniform_hypervolume") is not None]),
            "reached_uniform_hypervolume": sum(r.get("budget_to_uniform_hypervolume") is not None
                                               for r in per_run),
            # over the repeats that had int8 models (a search may offer none in some)
            **{key: _spread([r[key] for r in per_run if r.get(key) is not None])
               for key in ("int8_speedup_over_fp32_median", "int8_accuracy_cost_median")},
            "repeats_with_int8": sum(bool(r.get("int8_models")) for r in per_run),
            "offered_int8": _spread([r.get("offered_int8", 0) for r in per_run]),
            **{table: {s: _spread([r[table][s] for r in per_run]) for s in first[table]}
               for table in ("accuracy_at_speedup", "picked_at_speedup")},
        }
    return merged

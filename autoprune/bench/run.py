"""`autoprune bench`: autoprune's search against what a user would do instead, measured alike.

On one trained model, one data split and one device, with one fine-tuning recipe (steps,
optimizer, learning rate, distillation) and one wall-clock budget per method:

- uniform: Torch-Pruning with one ratio for every layer (L2 magnitude), at a sweep of ratios;
- global: the same sweep with `global_pruning=True` (Torch-Pruning ranks channels across layers);
- random: random search over autoprune's own search space (no uniform warm start);
- fastnas: NVIDIA Model Optimizer's FastNAS at FLOPs targets matched to the uniform sweep
  (optional: `pip install nvidia-modelopt requests torchprofile==0.0.4`);
- autoprune: `autoprune.search` as shipped.

Every method chooses on a *selection* split, as a user would: the models it offers are those
not beaten on selection accuracy by a faster model of its own. Those are then scored on a
separate *test* split and timed in one process, interleaved round by round with the unpruned
model, so a shared machine's drift favours no method. With `repeats`, everything runs again
on other selection/test halves and seeds, and the figures are given as mean, min and max:
one digits test image is worth about half a point, so single runs cannot separate methods
that are a point apart. See `summarise` for the figures.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
import torch.nn as nn
import torch_pruning as tp
from torch.utils.data import DataLoader, Subset

from ..pruning.grouping import output_layer_names
from ..runtime.evaluate import evaluate
from ..runtime.finetune import Distillation, finetune
from ..runtime.measure import count_macs_and_params, interleaved_latency_ms
from ..runtime.model_io import first_batch, to_device
from ..study.space import resolve_search_space

METHODS = ("uniform", "global", "random", "fastnas", "autoprune")
MATCHED_SPEEDUPS = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0)
RECIPE_DISTILLATION = Distillation(alpha=0.5, temperature=4.0)  # as autoprune's references


@dataclass
class BenchModel:
    """One model a method produced, with what it cost and, after `time_all`, how it runs."""

    method: str
    label: str
    model: nn.Module = field(repr=False)
    seconds: float                 # wall time to produce it (prune/search + fine-tune + eval)
    overhead_seconds: float        # of which neither fine-tuning nor evaluation
    macs: int = 0
    params: int = 0
    accuracy: float = 0.0          # on the test split
    select_accuracy: float = 0.0   # on the selection split (what the method chooses by)
    latency_ms: float = 0.0

    def figures(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("model")
        return data


@dataclass
class BenchSetup:
    """What every method shares."""

    model: nn.Module
    train: Any
    held_out: Any                   # never trained on; halved into selection and test per seed
    device: torch.device
    threads: int
    finetune_steps: int
    budget_seconds: float
    ratios: tuple[float, ...]
    output_dir: Path
    seed: int = 0
    log: Callable[[str], None] = logging.getLogger(__name__).info
    space: Any = None
    example_inputs: Any = None
    early_stop_margin: float | None = 0.02  # autoprune's (random search never stops early)
    select: Any = None              # what searches and FastNAS choose on (set per seed)
    test: Any = None                # what every reported accuracy is measured on (per seed)

    def __post_init__(self):
        self.space = self.space or resolve_search_space(self.model, None)
        self.example_inputs = to_device(first_batch(self.held_out, "held_out")[0], self.device)
        self.lr = (self.space.lr[0] * self.space.lr[1]) ** 0.5  # autoprune's reference lr
        if self.select is None:
            self.select, self.test = split_holdout(self.held_out, self.seed)


def split_holdout(loader: DataLoader, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Halve a held-out set into (selection, test), stratified by label."""
    from sklearn.model_selection import train_test_split

    dataset = loader.dataset
    labels = [int(dataset[i][1]) for i in range(len(dataset))]
    select, test = train_test_split(list(range(len(dataset))), test_size=0.5, stratify=labels,
                                    random_state=seed)
    return (DataLoader(Subset(dataset, select), batch_size=loader.batch_size),
            DataLoader(Subset(dataset, test), batch_size=loader.batch_size))


def _finetuned(setup: BenchSetup, method: str, label: str, pruned: nn.Module,
               started: float, overhead: float) -> BenchModel:
    finetune(pruned, setup.model, setup.train, setup.finetune_steps, setup.lr,
             RECIPE_DISTILLATION, setup.device, optimizer=setup.space.optimizer)
    evaluate(pruned, setup.select, setup.device)  # what a user would check; counted as evaluation
    return BenchModel(method, label, pruned.eval(), time.perf_counter() - started, overhead)


def torch_pruning_sweep(setup: BenchSetup, global_pruning: bool) -> list[BenchModel]:
    """Torch-Pruning the way its README shows, one fine-tuned model per ratio."""
    method = "global" if global_pruning else "uniform"
    keep = set(output_layer_names(setup.model, setup.example_inputs))
    results = []
    for ratio in setup.ratios:
        started = time.perf_counter()
        pruned = copy.deepcopy(setup.model)
        modules = dict(pruned.named_modules())
        pruner = tp.pruner.MetaPruner(
            pruned, setup.example_inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, global_pruning=global_pruning,
            max_pruning_ratio=0.9 if global_pruning else 1.0,
            ignored_layers=[modules[name] for name in keep])
        pruner.step()
        overhead = time.perf_counter() - started
        results.append(_finetuned(setup, method, f"{method} {ratio:g}", pruned, started, overhead))
        setup.log(f"  {method} {ratio:g}: {results[-1].seconds:.1f} s")
    return results


def autoprune_search(setup: BenchSetup, random: bool) -> list[BenchModel]:
    """autoprune's search (or random search over its space): its front, fine-tuned already."""
    from ..study.runner import search

    method = "random" if random else "autoprune"
    shutil.rmtree(setup.output_dir / method, ignore_errors=True)  # a fresh study, not a resumed one
    space = replace(setup.space, uniform_ratios=(), warm_starts=()) if random else setup.space
    sampler = optuna.samplers.RandomSampler(seed=setup.seed) if random else None
    started = time.perf_counter()
    result = search(setup.model, budget=setup.budget_seconds, train=setup.train, val=setup.select,
                    device=setup.device, search_space=space, sampler=sampler,
                    output_dir=setup.output_dir, study_name=method, seed=setup.seed,
                    finetune_steps=setup.finetune_steps, threads=setup.threads,
                    early_stop_margin=None if random else setup.early_stop_margin,
                    write_report=False, verbose=False)
    total = time.perf_counter() - started
    trials = [t for t in result.study.trials if t.datetime_complete is not None]
    trial_seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    work = sum(t.user_attrs.get("seconds_finetune", 0) + t.user_attrs.get("seconds_evaluate", 0)
               for t in trials)
    setup.log(f"  {method}: {len(trials)} trials in {total:.0f} s, front of {len(result.pareto)}")
    share = max(1, len(result.pareto))  # the trials' time, spread over the models they left
    return [BenchModel(method, f"{method} trial {c.trial}",
                       result.load(c.trial).to(setup.device).eval(),
                       trial_seconds / share, (trial_seconds - work) / share)
            for c in result.pareto]


def fastnas_sweep(setup: BenchSetup, mac_fractions: list[float],
                  failures: dict[str, str]) -> list[BenchModel]:
    """Model Optimizer's FastNAS at each FLOPs fraction, scored on the selection split; a
    target it refuses ("NOT all constraints can be satisfied") is noted in `failures`."""
    import modelopt.torch.prune as mtp

    batches = [to_device(b, setup.device) for b in setup.train]
    results = []
    for fraction in mac_fractions:
        started = time.perf_counter()
        try:  # PEERS.md's working call
            pruned, _ = mtp.prune(
                model=copy.deepcopy(setup.model), mode="fastnas",
                constraints={"flops": f"{100 * fraction:.1f}%"}, dummy_input=setup.example_inputs,
                config={"data_loader": batches, "collect_func": lambda batch: batch[0],
                        "max_iter_data_loader": 50,
                        "checkpoint": str(setup.output_dir / f"fastnas-{fraction:.3f}.pth"),
                        "score_func": lambda m: evaluate(m, setup.select, setup.device)})
        except Exception as err:  # a peer's refusal is a finding, not a crash of the run
            failures[f"fastnas {fraction:.0%} FLOPs"] = f"{type(err).__name__}: {err}"
            setup.log(f"  fastnas {fraction:.0%}: failed: {type(err).__name__}: {err}")
            continue
        overhead = time.perf_counter() - started
        results.append(_finetuned(setup, "fastnas", f"fastnas {fraction:.0%} FLOPs", pruned,
                                  started, overhead))
        setup.log(f"  fastnas {fraction:.0%}: {results[-1].seconds:.1f} s")
    return results


def time_all(setup: BenchSetup, models: list[BenchModel], rounds: int = 5) -> float:
    """Test accuracy, MACs and interleaved latency of every model; returns the unpruned latency."""
    for item in models:
        item.accuracy = evaluate(item.model, setup.test, setup.device)
        item.select_accuracy = evaluate(item.model, setup.select, setup.device)
        item.macs, item.params = count_macs_and_params(item.model, setup.example_inputs)
    timed = {"unpruned": setup.model, **{i: item.model for i, item in enumerate(models)}}
    with torch.no_grad():
        latencies = interleaved_latency_ms(timed, setup.example_inputs, setup.device,
                                           setup.threads, rounds=rounds, min_run_time=0.2)
    for i, item in enumerate(models):
        item.latency_ms = latencies[i]
    return latencies["unpruned"]


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


def offered(models: list[BenchModel], base: BenchModel) -> list[BenchModel]:
    """The models a method would offer a user: none of its own is faster and better on the
    selection split. Every method is filtered alike, so none gets to choose on the test split."""
    def speedup(m):
        return base.latency_ms / m.latency_ms
    return [m for m in models
            if not any(speedup(o) >= speedup(m) and o.select_accuracy >= m.select_accuracy
                       and (speedup(o), o.select_accuracy) != (speedup(m), m.select_accuracy)
                       for o in models)]


def picked_at(models: list[BenchModel], base: BenchModel, speedup: float) -> float | None:
    """Test accuracy of the model a user would pick for `speedup`: the best on the selection
    split among those at least that fast (the faster one on a tie); None if none is."""
    fast = [m for m in models if base.latency_ms / m.latency_ms >= speedup]
    if not fast:
        return None
    return max(fast, key=lambda m: (m.select_accuracy, -m.latency_ms)).accuracy


def summarise(models: list[BenchModel], base: BenchModel,
              walls: dict[str, float] | None = None) -> dict[str, Any]:
    """Per method: front, hypervolume, accuracy at matched speedups, speedup per MAC cut, overhead.

    Front, hypervolume and interpolated accuracies use the test accuracies of the models the
    method offers (`offered`); `picked_at_speedup` is the single model a user would pick.
    """
    summary = {}
    for method in METHODS:
        mine = [m for m in models if m.method == method]
        if not mine:
            continue
        shown = offered(mine, base)
        points = [(base.latency_ms / m.latency_ms, m.accuracy) for m in shown]
        efficiency = sorted((base.latency_ms / m.latency_ms) / (base.macs / m.macs) for m in mine)
        seconds = sum(m.seconds for m in mine)
        summary[method] = {
            "models": len(mine),
            "offered": len(shown),
            "front": [{"speedup": s, "accuracy": a} for s, a in front(points)],
            "hypervolume": hypervolume_2d(points),
            "accuracy_at_speedup": {f"{s:g}x": accuracy_at(points, s) for s in MATCHED_SPEEDUPS},
            "picked_at_speedup": {f"{s:g}x": picked_at(mine, base, s) for s in MATCHED_SPEEDUPS},
            "speedup_per_mac_reduction_median": efficiency[len(efficiency) // 2],
            "wall_seconds": (walls or {}).get(method, seconds),
            # of the trials' (or sweep points') time, the share that is neither fine-tuning
            # nor evaluation: pruning, measuring, sampling, storage, checkpoints
            "overhead_share": sum(m.overhead_seconds for m in mine) / seconds if seconds else 0.0,
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
        merged[method] = {
            "repeats": len(per_run),
            **{key: _spread([r[key] for r in per_run])
               for key in ("hypervolume", "speedup_per_mac_reduction_median", "overhead_share",
                           "wall_seconds")},
            **{table: {s: _spread([r[table][s] for r in per_run]) for s in first[table]}
               for table in ("accuracy_at_speedup", "picked_at_speedup")},
        }
    return merged


def machine_description(device: torch.device, threads: int) -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": threads, "device": str(device),
            "torch": torch.__version__, "torch_pruning": tp.__version__, "optuna": optuna.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import modelopt
        info["modelopt"] = modelopt.__version__
    except ImportError:
        pass
    return info


def run_once(setup: BenchSetup, methods: tuple[str, ...]) -> dict[str, Any]:
    """Every method on one selection/test split and seed; the models timed together."""
    setup.output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(setup.seed)
    base_accuracy = evaluate(setup.model, setup.select, setup.device)
    setup.log(f"seed {setup.seed}: unpruned selection accuracy {base_accuracy:.2%}")
    models: list[BenchModel] = []
    skipped, walls = {}, {}
    for method in methods:
        setup.log(f"{method} ...")
        method_started = time.perf_counter()
        if method in ("uniform", "global"):
            models += torch_pruning_sweep(setup, global_pruning=method == "global")
        elif method in ("random", "autoprune"):
            models += autoprune_search(setup, random=method == "random")
        elif method == "fastnas":
            try:
                import modelopt.torch.prune  # noqa: F401  (optional: the bench extra)
            except ImportError as err:
                skipped["fastnas"] = f"nvidia-modelopt is not installed ({err})"
                setup.log(f"  skipped: {skipped['fastnas']}")
                continue
            base_macs = count_macs_and_params(setup.model, setup.example_inputs)[0]
            uniform = [m for m in models if m.method == "uniform"] or torch_pruning_sweep(setup, False)
            fractions = [count_macs_and_params(m.model, setup.example_inputs)[0] / base_macs
                         for m in uniform]
            models += fastnas_sweep(setup, fractions, skipped)
        walls[method] = time.perf_counter() - method_started
    setup.log(f"timing {len(models)} models and the unpruned one, interleaved ...")
    base = BenchModel("unpruned", "unpruned", setup.model, 0.0, 0.0)
    base.latency_ms = time_all(setup, models)
    base.accuracy = evaluate(setup.model, setup.test, setup.device)
    base.select_accuracy = base_accuracy
    base.macs, base.params = count_macs_and_params(setup.model, setup.example_inputs)
    return {"seed": setup.seed,
            "splits": {"train": len(setup.train.dataset), "select": len(setup.select.dataset),
                       "test": len(setup.test.dataset)},
            "unpruned": base.figures(), "skipped": skipped,
            "methods": summarise(models, base, walls), "models": [m.figures() for m in models]}


def run_bench(setup: BenchSetup, methods: tuple[str, ...] = METHODS, command: str = "",
              repeats: int = 1) -> dict[str, Any]:
    """Run each method `repeats` times (seeds setup.seed, +1, ...: other selection/test halves,
    samplers and fine-tuning order), and write results.json and comparison.html."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown benchmark methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    setup.output_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now()
    runs = []
    for seed in range(setup.seed, setup.seed + repeats):
        run_setup = replace(setup, seed=seed, select=None, test=None,
                            output_dir=setup.output_dir / f"seed-{seed}")
        runs.append(run_once(run_setup, methods))
    results = {
        "command": command, "date": started.isoformat(timespec="seconds"),
        "seconds": (datetime.now() - started).total_seconds(),
        "machine": machine_description(setup.device, setup.threads),
        "recipe": {"finetune_steps": setup.finetune_steps,
                   "autoprune_early_stop_margin": setup.early_stop_margin, "optimizer": setup.space.optimizer,
                   "lr": setup.lr, "kd_alpha": RECIPE_DISTILLATION.alpha,
                   "kd_temperature": RECIPE_DISTILLATION.temperature,
                   "budget_seconds_per_search": setup.budget_seconds, "ratios": list(setup.ratios)},
        "splits": runs[0]["splits"],
        "hypervolume_reference": "speedup 1 (the unpruned latency) and accuracy 0; the speedup "
                                 "axis is time saved, 1 - 1/speedup, so a hypervolume is in [0, 1]",
        "unpruned": runs[0]["unpruned"], "skipped": runs[0]["skipped"],
        "repeats": repeats, "methods": aggregate(runs), "runs": runs,
    }
    (setup.output_dir / "results.json").write_text(json.dumps(results, indent=1))
    from .report import write_comparison
    write_comparison(results, setup.output_dir / "comparison.html")
    return results

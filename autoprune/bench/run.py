"""`autoprune bench`: autoprune's search against what a user would do instead, measured alike.

On one trained model, one data split and one device, with one fine-tuning recipe (steps,
optimizer, learning rate, distillation) and one wall-clock budget per method:

- uniform: Torch-Pruning with one ratio for every layer (L2 magnitude), at a sweep of ratios;
- uniform-int8: each point of that sweep quantized to int8 after its fine-tuning, as a user
  who prunes and then quantizes would (targets that run int8: `--target onnxruntime`);
- global: the same sweep with `global_pruning=True` (Torch-Pruning ranks channels across layers);
- random: random search over autoprune's own search space (no uniform warm start);
- fastnas: NVIDIA Model Optimizer's FastNAS at FLOPs targets matched to the uniform sweep
  (optional: `pip install nvidia-modelopt requests torchprofile==0.0.4`);
- autoprune-fp32: `autoprune.search` with precision fixed to fp32 (prune-only);
- autoprune-gp: `autoprune.search` with Optuna's Gaussian-process sampler in place of TPE
  (the same references first; the sampler comparison);
- autoprune-derived: `autoprune.search` with 3 derived warm starts (study/warm_starts.py; off by
  default): what they add;
- autoprune: `autoprune.search` as shipped (on a target that runs int8 it searches precision).

Every model is timed on the chosen target (`--target`: PyTorch eager by default, ONNX Runtime
with `onnxruntime`), the searches search on it too.

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
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
import torch.nn as nn
import torch_pruning as tp
from optuna.trial import TrialState
from torch.utils.data import DataLoader, Subset

from ..pruning.grouping import output_layer_names
from ..runtime.evaluate import evaluate
from ..runtime.finetune import Distillation, finetune
from ..runtime.latency_model import prediction_errors
from ..runtime.measure import count_macs_and_params, interleaved_latency_ms
from ..runtime.model_io import first_batch, logits_of, run_model, to_device
from ..store.records import StudyRecord, TrialRecord, timed_against_predicted
from ..study.config import reference_lr
from ..study.constraints import default_accuracy_floor
from ..study.options import SearchOptions
from ..study.space import resolve_search_space
from ..targets import get_target
from ..runtime.quantize import OnnxModule, calibration_inputs, quantize_int8
from .scoring import INT8_METHODS, METHODS, BenchModel, aggregate, summarise

RECIPE_DISTILLATION = Distillation(alpha=0.5, temperature=4.0)  # as autoprune's references


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
    latency_figures: dict = None    # per search method: bench.run.latency_figures (per seed)
    equal_budget: bool = False      # sweeps fine-tune longer, to spend a search's budget too
    data: dict | None = None        # what results.json says about the data (bundled_data.describe)
    floor_share: float | None = 0.5  # the front floor, every method alike (None: no floor)
    promote_share: float | None = SearchOptions.promote_share  # both searches (promotion.py)
    target: str | None = None       # where every model is timed and searched (targets/)

    def __post_init__(self):
        self.space = self.space or resolve_search_space(self.model, None)
        self.example_inputs = to_device(first_batch(self.held_out, "held_out")[0], self.device)
        self.lr = reference_lr(self.space)
        self.latency_figures = {} if self.latency_figures is None else self.latency_figures
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
               started: float, overhead: float, method_started: float,
               steps: int | None = None) -> BenchModel:
    steps = steps or setup.finetune_steps
    finetune(pruned, setup.model, setup.train, steps, setup.lr, RECIPE_DISTILLATION,
             setup.device, optimizer=setup.space.optimizer)
    evaluate(pruned, setup.select, setup.device)  # what a user would check; counted as evaluation
    now = time.perf_counter()
    return BenchModel(method, label, pruned.eval(), now - started, overhead,
                      finished_seconds=now - method_started, finetune_steps=steps)


def steps_filling(setup: BenchSetup, pruned: nn.Module, seconds: float) -> int:
    """Fine-tuning steps of `pruned` that take about `seconds` (3 steps of a copy timed), and
    never fewer than the recipe's."""
    probe = copy.deepcopy(pruned)
    started = time.perf_counter()
    finetune(probe, setup.model, setup.train, 3, setup.lr, RECIPE_DISTILLATION, setup.device,
             optimizer=setup.space.optimizer)
    per_step = (time.perf_counter() - started) / 3
    return max(setup.finetune_steps, int(seconds / per_step))


def torch_pruning_sweep(setup: BenchSetup, global_pruning: bool) -> list[BenchModel]:
    """Torch-Pruning the way its README shows, one fine-tuned model per ratio.

    With `setup.equal_budget`, the sweep gets a search's wall clock too: each ratio's model
    fine-tunes for as many steps as fit in its share of the budget, as a user who chose one
    global ratio would spend the time.
    """
    method = "global" if global_pruning else "uniform"
    keep = set(output_layer_names(setup.model, setup.example_inputs))
    results = []
    sweep_started = time.perf_counter()
    for index, ratio in enumerate(setup.ratios):
        started = time.perf_counter()
        pruned = copy.deepcopy(setup.model)
        modules = dict(pruned.named_modules())
        pruner = tp.pruner.MetaPruner(
            pruned, setup.example_inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, global_pruning=global_pruning,
            max_pruning_ratio=0.9 if global_pruning else 1.0,
            ignored_layers=[modules[name] for name in keep])
        pruner.step()
        steps = setup.finetune_steps
        if setup.equal_budget:
            share_ends = sweep_started + setup.budget_seconds * (index + 1) / len(setup.ratios)
            # 85 %: the evaluation on the selection split takes the rest
            steps = steps_filling(setup, pruned, 0.85 * (share_ends - time.perf_counter()))
        overhead = time.perf_counter() - started
        results.append(_finetuned(setup, method, f"{method} {ratio:g}", pruned, started, overhead,
                                  sweep_started, steps))
        setup.log(f"  {method} {ratio:g}: {steps} steps, {results[-1].seconds:.1f} s")
    return results


def autoprune_search(setup: BenchSetup, method: str) -> list[BenchModel]:
    """autoprune's search (`method` "autoprune"), the same with fp32 only ("autoprune-fp32"),
    with the Gaussian-process sampler ("autoprune-gp") or with 3 derived warm starts
    ("autoprune-derived"), or random search over its space ("random"): its front,
    fine-tuned already."""
    from ..study.runner import search

    random = method == "random"
    shutil.rmtree(setup.output_dir / method, ignore_errors=True)  # a fresh study, not a resumed one
    space = (replace(setup.space, uniform_ratios=(), warm_starts=(), derived_warm_starts=0)
             if random else setup.space)
    if method == "autoprune-derived":
        space = replace(space, derived_warm_starts=3)
    if method == "autoprune-fp32":
        space = replace(space, precisions=("fp32",), precision_requested=False)
    sampler = (optuna.samplers.RandomSampler(seed=setup.seed) if random else
               optuna.samplers.GPSampler(seed=setup.seed) if method == "autoprune-gp" else None)
    started, started_at = time.perf_counter(), datetime.now()
    result = search(setup.model, budget=setup.budget_seconds, train=setup.train, val=setup.select,
                    device=setup.device, search_space=space, sampler=sampler,
                    output_dir=setup.output_dir, study_name=method, seed=setup.seed,
                    target=setup.target,
                    finetune_steps=setup.finetune_steps, threads=setup.threads,
                    early_stop_margin=None if random else setup.early_stop_margin,
                    options=SearchOptions(front_floor_share=setup.floor_share,
                                          promote_share=setup.promote_share),
                    write_report=False, verbose=False)
    total = time.perf_counter() - started
    trials = [t for t in result.study.trials if t.datetime_complete is not None]
    trial_seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    seconds = [TrialRecord.of(t).seconds for t in trials]
    work = sum(s.get("finetune", 0) + s.get("evaluate", 0) for s in seconds)
    setup.log(f"  {method}: {len(trials)} trials in {total:.0f} s, front of {len(result.pareto)}")
    share = max(1, len(result.pareto))  # the trials' time, spread over the models they left
    setup.latency_figures[method] = latency_figures(result.study)
    finished = {t.number: (t.datetime_complete - started_at).total_seconds() for t in trials}
    steps = {t.number: TrialRecord.of(t).finetuned_steps or setup.finetune_steps for t in trials}
    models = []
    for c in result.pareto:
        fp32 = result.load(c.trial).to(setup.device).eval()
        int8 = c.precision == "int8"
        models.append(BenchModel(
            method, f"{method} trial {c.trial}" + (" int8" if int8 else ""),
            result.load_int8(c.trial, setup.threads) if int8 else fp32,
            trial_seconds / share, (trial_seconds - work) / share,
            finished_seconds=finished[c.trial], finetune_steps=steps[c.trial],
            precision=c.precision, fp32_model=fp32 if int8 else None))
    return models


def quantized_sweep(setup: BenchSetup, sweep: list[BenchModel]) -> list[BenchModel]:
    """Each fine-tuned sweep model quantized to int8 the way an int8 trial is (static, QDQ,
    calibrated on the search's default number of training batches); its time is the sweep
    point's plus the quantization's."""
    calibration = calibration_inputs(setup.train, SearchOptions.calibration_batches)
    inputs = setup.example_inputs.cpu()
    results = []
    for point in sweep:
        started = time.perf_counter()
        int8 = OnnxModule(quantize_int8(point.model.cpu(), inputs, calibration), setup.threads)
        evaluate(int8, setup.select, "cpu")
        quantizing = time.perf_counter() - started
        results.append(BenchModel(
            "uniform-int8", point.label.replace("uniform", "uniform-int8"), int8,
            point.seconds + quantizing, point.overhead_seconds + quantizing,
            finished_seconds=point.finished_seconds + quantizing,
            finetune_steps=point.finetune_steps, precision="int8", fp32_model=point.model))
        setup.log(f"  {results[-1].label}: quantized in {quantizing:.1f} s")
    return results


def latency_figures(study: optuna.Study) -> dict[str, Any]:
    """How far a search's latencies can be trusted: the share of front members whose in-trial
    speedup (the estimate the search acted on; and the paired reading alone) is within 10 % of
    the final interleaved re-timing, and how well the latency model predicted the trials'
    readings."""
    record = StudyRecord.of(study)
    final = record.final_latency_ms or {}
    agree, reading_agrees = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        trial_record = TrialRecord.of(trial)
        if str(trial.number) in final and trial_record.speedup and "baseline" in final:
            settled = final["baseline"] / final[str(trial.number)]
            agree.append(abs(trial_record.speedup - settled) / settled <= 0.10)
            reading_agrees.append(abs(trial_record.measured_speedup - settled) / settled <= 0.10)
    pairs = timed_against_predicted(study.get_trials(deepcopy=False))
    errors = prediction_errors((predicted, timed) for _, predicted, timed in pairs) or {}
    return {"front_speedup_within_10pct": sum(agree) / len(agree) if agree else None,
            "front_reading_within_10pct": (sum(reading_agrees) / len(reading_agrees)
                                           if reading_agrees else None),
            "prediction_median_abs_error": errors.get("median_abs_error"),
            "prediction_within_10pct": errors.get("within_10pct"),
            "latency_model_seconds": (record.latency_model or {}).get("build_seconds")}


def fastnas_sweep(setup: BenchSetup, mac_fractions: list[float],
                  failures: dict[str, str]) -> list[BenchModel]:
    """Model Optimizer's FastNAS at each FLOPs fraction, scored on the selection split; a
    target it refuses ("NOT all constraints can be satisfied") is noted in `failures`."""
    import modelopt.torch.prune as mtp

    batches = [to_device(b, setup.device) for b in setup.train]
    results = []
    sweep_started = time.perf_counter()
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
                                  started, overhead, sweep_started))
        setup.log(f"  fastnas {fraction:.0%}: {results[-1].seconds:.1f} s")
    return results


def time_all(setup: BenchSetup, models: list[BenchModel], rounds: int = 5) -> float:
    """Test accuracy, MACs and interleaved latency of every model; returns the unpruned latency."""
    for item in models:
        item.accuracy = evaluate(item.model, setup.test, setup.device)
        item.select_accuracy = evaluate(item.model, setup.select, setup.device)
        item.macs, item.params = count_macs_and_params(item.fp32_model or item.model,
                                                       setup.example_inputs)
        if item.fp32_model is not None:
            item.fp32_accuracy = evaluate(item.fp32_model, setup.test, setup.device)
    timed = {"unpruned": setup.model, **{i: item.model for i, item in enumerate(models)},
             **{("fp32", i): item.fp32_model for i, item in enumerate(models) if item.fp32_model}}
    with torch.no_grad():
        latencies = interleaved_latency_ms(timed, setup.example_inputs,
                                           get_target(setup.target, setup.device, setup.threads),
                                           rounds=rounds, block_seconds=0.2)
    for i, item in enumerate(models):
        item.latency_ms = latencies[i]
        item.fp32_latency_ms = latencies.get(("fp32", i))
    return latencies["unpruned"]


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
    skipped, walls, sweeps = {}, {}, {}

    def uniform_sweep():  # run once, shared by uniform, uniform-int8 and fastnas
        if "uniform" not in sweeps:
            started = time.perf_counter()
            sweeps["uniform"] = torch_pruning_sweep(setup, global_pruning=False)
            sweeps["seconds"] = time.perf_counter() - started
        return sweeps["uniform"]

    for method in methods:
        setup.log(f"{method} ...")
        method_started = time.perf_counter()
        swept_before = "uniform" in sweeps
        if method == "uniform":
            models += uniform_sweep()
        elif method == "global":
            models += torch_pruning_sweep(setup, global_pruning=True)
        elif method == "uniform-int8":
            models += quantized_sweep(setup, uniform_sweep())
        elif method in ("random", "autoprune", "autoprune-fp32", "autoprune-gp",
                        "autoprune-derived"):
            models += autoprune_search(setup, method)
        elif method == "fastnas":
            try:
                import modelopt.torch.prune  # noqa: F401  (optional: the bench extra)
            except ImportError as err:
                skipped["fastnas"] = f"nvidia-modelopt is not installed ({err})"
                setup.log(f"  skipped: {skipped['fastnas']}")
                continue
            base_macs = count_macs_and_params(setup.model, setup.example_inputs)[0]
            uniform = uniform_sweep()
            fractions = [count_macs_and_params(m.model, setup.example_inputs)[0] / base_macs
                         for m in uniform]
            models += fastnas_sweep(setup, fractions, skipped)
        walls[method] = time.perf_counter() - method_started
        if method in ("uniform", "uniform-int8") and swept_before:
            walls[method] += sweeps["seconds"]  # the sweep it builds on ran for another method
    setup.log(f"timing {len(models)} models and the unpruned one, interleaved ...")
    base = BenchModel("unpruned", "unpruned", setup.model, 0.0, 0.0)
    base.latency_ms = time_all(setup, models)
    base.accuracy = evaluate(setup.model, setup.test, setup.device)
    base.select_accuracy = base_accuracy
    base.macs, base.params = count_macs_and_params(setup.model, setup.example_inputs)
    with torch.no_grad():  # autoprune's default front floor, applied to every method alike
        classes = logits_of(run_model(setup.model, setup.example_inputs)).shape[-1]
    floor = (0.0 if setup.floor_share is None
             else default_accuracy_floor(base_accuracy, classes, setup.floor_share))
    return {"seed": setup.seed,
            "splits": {"train": len(setup.train.dataset), "select": len(setup.select.dataset),
                       "test": len(setup.test.dataset)},
            "unpruned": base.figures(), "skipped": skipped,
            "accuracy_floor": floor,
            "methods": summarise(models, base, walls, setup.latency_figures, floor),
            "models": [m.figures() for m in models]}


def run_bench(setup: BenchSetup, methods: tuple[str, ...] = METHODS, command: str = "",
              repeats: int = 1, latency_check: list[str] = (),
              latency_configurations: int = 30) -> dict[str, Any]:
    """Run each method `repeats` times (seeds setup.seed, +1, ...: other selection/test halves,
    samplers and fine-tuning order), and write results.json and comparison.html."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown benchmark methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    target = get_target(setup.target, setup.device, setup.threads)  # unknown: refused now
    int8 = [m for m in methods if m in INT8_METHODS]
    if int8 and "int8" not in target.precisions:
        raise ValueError(f"{', '.join(int8)} needs a target that runs int8 (onnxruntime); "
                         f"{target.name} runs {', '.join(target.precisions)}")
    setup.output_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now()
    checks = []
    if latency_check:
        from .latency_check import check_latency_model

        for name in latency_check:
            setup.log(f"latency model check: {name} ...")
            checks.append(check_latency_model(name, target, latency_configurations,
                                              seed=setup.seed))
    runs = []
    for seed in range(setup.seed, setup.seed + repeats) if methods else ():
        run_setup = replace(setup, seed=seed, select=None, test=None, latency_figures={},
                            output_dir=setup.output_dir / f"seed-{seed}")
        runs.append(run_once(run_setup, methods))
    results = {
        "command": command, "date": started.isoformat(timespec="seconds"),
        "seconds": (datetime.now() - started).total_seconds(),
        "machine": machine_description(setup.device, setup.threads),
        "target": target.name,
        "recipe": {"finetune_steps": setup.finetune_steps,
                   "autoprune_early_stop_margin": setup.early_stop_margin, "optimizer": setup.space.optimizer,
                   "lr": setup.lr, "kd_alpha": RECIPE_DISTILLATION.alpha,
                   "kd_temperature": RECIPE_DISTILLATION.temperature,
                   "budget_seconds_per_search": setup.budget_seconds, "ratios": list(setup.ratios)},
        "data": setup.data,
        "front_floor_share": setup.floor_share,
        "promote_share": setup.promote_share,
        "equal_budget": setup.equal_budget,
        "splits": runs[0]["splits"] if runs else None,
        "hypervolume_reference": "speedup 1 (the unpruned latency) and accuracy 0; the speedup "
                                 "axis is time saved, 1 - 1/speedup, so a hypervolume is in [0, 1]",
        "unpruned": runs[0]["unpruned"] if runs else None,
        "skipped": runs[0]["skipped"] if runs else {},
        "repeats": repeats, "methods": aggregate(runs), "runs": runs,
        "latency_model_check": checks,
    }
    (setup.output_dir / "results.json").write_text(json.dumps(results, indent=1))
    if runs:
        from .report import write_comparison
        write_comparison(results, setup.output_dir / "comparison.html")
    return results

"""`search()`: validate, prepare, open or join the study, measure the unpruned model, plan
fine-tuning, run the trials, finish (re-time the front, write the report).

Bad input fails in the first two phases, before any trial, with a specific message. Inside the
study, a trial that raises is recorded as failed with its reason (`TrialRecord.failure`) and
the study goes on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
import torch
import torch.nn as nn
import torch.nn.functional as F
from optuna.trial import TrialState

from ..console import ProgressBar, quiet_optuna, verbosity
from ..errors import CheckpointError, InvalidInputError
from ..pruning.conversions import prepare
from ..pruning.grouping import check_prunable
from ..results.pareto import FrontTracker
from ..results.result import SearchResult
from ..runtime.evaluate import top1_accuracy
from ..runtime.quantize import calibration_inputs
from ..runtime.language_model import causal_lm_task, is_causal_lm
from ..runtime.task import (MAXIMIZE, Task, check_direction, check_task, check_training_loss,
                            classification_task, user_task)
from ..runtime.measure import Measurement, interleaved_against_reference
from ..targets.base import Target, get_target
from ..runtime.model_io import (any_batch, first_batch, logits_of, resolve_device, run_model,
                               to_device)
from ..store.records import StudyRecord, record_study, record_trial
from ..store.folders import check_study_name, study_folder
from ..store.storage import (StorageOutage, open_artifact_store, open_storage, redact,
                             storage_url)
from .baseline import describe_data, measure_baseline
from .budget import Budget, parse_budget
from .callbacks import (CheckpointRetention, Progress, ReleaseAfterFailure,
                        StopOnRepeatedFailure)
from .config import config_from_params, uniform_params
from .constraints import (ACCURACY_FLOOR, check_reachable_latency, default_accuracy_floor,
                          parse_constraints)
from .finetune_plan import choose_finetune_steps
from .latency import settled_reference, study_latency_model
from .opening import (check_same_search, default_study_name, enqueue_derived_starts,
                      enqueue_references, open_study, requeue_interrupted, search_identity)
from .options import SearchOptions
from .preflight import preflight
from .promotion import Int8Twins, promote_front, waiting_promotions
from .prepared import PreparedModel
from .space import SearchSpace, resolve_search_space
from .trial import TrialContext, run_trial
from .warm_starts import fastest_speedup

KEEP_CHECKPOINTS = ("front", "all")

logger = logging.getLogger(__name__)


@dataclass
class _Session:
    """An open study and what this process needs to add trials to it."""

    study: optuna.Study
    created: bool
    storage: Any               # the opened Optuna storage (its URL may hold a password)
    where: str                 # the storage as shown: password masked
    run_dir: Path
    artifact_location: Any
    store: Any                 # the artifact store
    finetune_inputs: dict = field(default_factory=dict)  # (train, val), metric, loss, task

    def result(self, prepared: PreparedModel) -> SearchResult:
        return SearchResult(self.study, prepared.model, self.store, self.run_dir / "trials",
                            storage=self.where, teacher=prepared.model, **self.finetune_inputs)


def _check_model_runs(model: nn.Module, example_inputs: Any, targets: Any, metric: Callable,
                      loss_fn: Callable) -> None:
    try:
        with torch.no_grad():
            output = run_model(model, example_inputs)
    except Exception as err:
        raise InvalidInputError(
            f"the model's forward pass fails on the first validation batch "
            f"({type(err).__name__}: {err}); check that `val` yields inputs the model accepts"
        ) from err
    try:
        logits = logits_of(output)
    except TypeError as err:
        raise InvalidInputError(f"{err}; the model must return logits, a tuple starting with "
                                "them, or an object with `.logits`") from err
    for name, function in (("metric", metric), ("loss", loss_fn)):
        try:
            value = float(function(logits, targets))
        except Exception as err:
            raise InvalidInputError(f"the {name} fails on the model's output for the first "
                                    f"validation batch ({type(err).__name__}: {err})") from err
        if name == "metric" and value != value:
            raise InvalidInputError("the metric returned NaN on the first validation batch")


def _first_inputs(train: Iterable, val: Iterable | None) -> Any:
    """The model's inputs in the first batch (its first item) of `val`, else of `train`."""
    batch = any_batch(val if val is not None else train, "val" if val is not None else "train")
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    raise InvalidInputError(f"the first batch is a {type(batch).__name__}, not a tuple whose "
                            "first item is the model's input: pass example_inputs=")


def _check_inputs_run(model: nn.Module, inputs: Any) -> None:
    try:
        with torch.no_grad():
            run_model(model, inputs)
    except Exception as err:
        raise InvalidInputError(
            f"the model's forward pass fails on the example inputs ({type(err).__name__}: "
            f"{err}); pass example_inputs= when a batch's first item is not what the model "
            "takes") from err


def _task(model: nn.Module, val: Iterable | None, device: torch.device,
          metric: Callable | None, loss: Callable | None, evaluate: Callable | None,
          direction: str, train_step: Callable | None,
          distill: Callable | None) -> tuple[Task, dict | None]:
    """The task the trials run (runtime/task.py), and, for the user's contract or a causal LM,
    which callables score and train (for messages); None for the built-in classifier."""
    check_direction(direction)
    if evaluate is None and is_causal_lm(model):
        if metric is not None or loss is not None or train_step is not None or distill is not None:
            raise InvalidInputError("a causal LM is scored by perplexity and trained on the "
                                    "next-token loss; for another metric or loss pass evaluate= "
                                    "and train_step=")
        if val is None:
            raise InvalidInputError("`val` is required: (input_ids, labels) batches whose "
                                    "perplexity ranks the models")
        return causal_lm_task(val, device), {
            "score": "perplexity on val (input_ids, labels)",
            "loss": "the next-token loss on train (input_ids, labels)"}
    if evaluate is None:
        if direction != MAXIMIZE:
            raise InvalidInputError("direction='minimize' needs evaluate=: the built-in metric "
                                    "(top-1 accuracy, or metric=) is maximized")
        if train_step is not None or distill is not None:
            raise InvalidInputError("train_step= and distill= go with evaluate= (the built-in "
                                    "classifier's loss is loss=)")
        if val is None:
            raise InvalidInputError("`val` is required: an iterable of (inputs, targets) "
                                    "batches (or give evaluate=, which scores models itself)")
        return classification_task(val, device, metric, loss), None
    if metric is not None:
        raise InvalidInputError("give metric= or evaluate=, not both: evaluate= replaces the "
                                "built-in metric")
    names = {"score": f"evaluate ({getattr(evaluate, '__name__', 'callable')})",
             "loss": (f"train_step ({getattr(train_step, '__name__', 'callable')})"
                      if train_step is not None else
                      f"distill ({getattr(distill, '__name__', 'callable')})"
                      if distill is not None else "the built-in loss")}
    return user_task(evaluate, direction, train_step, distill, loss_fn=loss), names


def _validate(model, finetune_steps, early_stop_margin, keep_checkpoints) -> None:
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if finetune_steps is not None and (not isinstance(finetune_steps, int) or finetune_steps < 0):
        raise InvalidInputError(f"finetune_steps must be a non-negative integer, "
                                f"got {finetune_steps!r}")
    if early_stop_margin is not None and (isinstance(early_stop_margin, bool) or not isinstance(
            early_stop_margin, (int, float)) or not early_stop_margin >= 0):
        raise InvalidInputError(f"early_stop_margin must be a non-negative number or None, "
                                f"got {early_stop_margin!r}")
    if keep_checkpoints not in KEEP_CHECKPOINTS:
        raise InvalidInputError(f"keep_checkpoints must be one of {KEEP_CHECKPOINTS}, "
                                f"got {keep_checkpoints!r}")


def _prepare(model: nn.Module, train: Iterable, val: Iterable | None, space: SearchSpace,
             ignored_layers: Iterable[str], device: torch.device, metric: Callable,
             loss_fn: Callable, task: Task, user: dict | None, target: Target,
             example_inputs: Any = None) -> PreparedModel:
    """The model set up for pruning, after checking that it, its data and its task (the
    built-in metric and loss, or the user's `evaluate` and training step) work, that the
    timing target can run it, and that it can be pruned as planned (the pre-flight check)."""
    converted = prepare(model.to(device).eval())  # a converted copy for GPT-2 (conversions.py)
    if user is None:  # the built-in classifier: (inputs, targets) batches
        inputs, example_targets = first_batch(val, "val")
        training_batch = to_device(first_batch(train, "train"), device)
        _check_model_runs(converted, to_device(inputs, device),
                          to_device(example_targets, device), metric, loss_fn)
        check_training_loss(task, converted, training_batch,
                            "the training loss (the loss with distillation)")
    else:
        inputs = example_inputs if example_inputs is not None else _first_inputs(train, val)
        _check_inputs_run(converted, to_device(inputs, device))
        check_task(task, converted, to_device(any_batch(train, "train"), device), device, user)
    inputs = example_inputs if example_inputs is not None else inputs
    target.check(converted, inputs)  # e.g. ONNX Runtime: one tensor input
    prepared = PreparedModel.build(converted, inputs, space, ignored_layers, device)
    check_prunable(prepared.dimensions, type(prepared.model).__name__)
    preflight(prepared)
    return prepared


def _open_or_join(prepared: PreparedModel, constraints: dict, budget: Budget, storage,
                  study_name: str | None, output_dir, artifacts, sampler,
                  seed: int | None, task: Task, target: Target) -> _Session:
    """Open the study (or join it, when the search is the same) and its artifact store."""
    space = prepared.space
    study_name = study_name if study_name is not None else default_study_name(prepared.model)
    storage = open_storage(storage or f"sqlite:///{Path(output_dir) / study_name / 'study.db'}")
    where = storage_url(storage)  # password masked: it is logged and reported
    sampler = sampler or optuna.samplers.TPESampler(
        multivariate=True, seed=seed, constant_liar=True,
        n_startup_trials=max(8, len(space.uniform_ratios) + len(space.warm_starts)
                             + space.derived_warm_starts + 5))
    study, created = open_study(study_name, storage, sampler, task.metric_name, task.direction)
    run_dir = study_folder(output_dir, study_name, StudyRecord.of(study).uid, created, where)
    lm_timing = ({"lm_latency": target.lm_latency, "decode_tokens": target.decode_tokens}
                 if is_causal_lm(prepared.model) else None)
    check_same_search(study, search_identity(prepared, constraints, lm_timing), where)
    if created:  # enqueued once per study, whatever the number of workers
        enqueue_references(study, prepared)
    artifact_location = artifacts if artifacts is not None else run_dir / "artifacts"
    session = _Session(study, created, storage, where, run_dir, artifact_location,
                       open_artifact_store(artifact_location))
    logger.info(f"autoprune: study {study_name!r} ({'new' if created else 'resumed or joined'}) "
                f"in {where}; checkpoints in {artifact_location}; report in {run_dir}/")
    logger.info(f"search space {space.family!r} ({space.source}): {len(prepared.dimensions)} "
                f"sparsity dimensions, criteria {', '.join(space.criteria)}; budget "
                f"{budget.describe()}")
    if prepared.split_kept:
        kept = prepared.split_kept
        logger.info(f"kept unpruned: {len(kept)} layers whose outputs are split into parts "
                    "along the channels, which Torch-Pruning cannot cut safely ("
                    f"{', '.join(kept[:4])}{', ...' if len(kept) > 4 else ''})")
    return session


def _plan_finetuning(session: _Session, prepared: PreparedModel, budget: Budget,
                     finetune_steps: int | None, train: Iterable, batch_loss: Callable,
                     options: SearchOptions) -> int:
    """Steps per trial: the caller's, else the study's, else decided now from a typical model
    (uniform pruning at the middle reference ratio) and recorded for every later process."""
    steps = finetune_steps if finetune_steps is not None else StudyRecord.of(
        session.study).finetune_steps
    if steps is None:
        space, dimensions = prepared.space, prepared.dimensions
        middle = sorted(space.uniform_ratios or [0.5])[len(space.uniform_ratios) // 2]
        sparsity = config_from_params(uniform_params(space, dimensions, middle), dimensions,
                                      space).sparsity
        if budget.seconds is not None and options.promote_share:  # trials get the rest
            budget = replace(budget, seconds=budget.seconds * (1 - options.promote_share))
        steps = choose_finetune_steps(budget, train, prepared.prune(sparsity).model,
                                      prepared.model, prepared.device, batch_loss,
                                      space.optimizer,
                                      options.target_trials, options.max_finetune_epochs)
        record_study(session.study, finetune_steps=steps)
    return steps


def _objective(session: _Session, context: TrialContext, budget: Budget,
               interrupted: list[int]) -> Callable[[optuna.Trial], tuple]:
    """The function Optuna calls per trial: a surplus check, then the trial, its failures
    recorded with their reason (storage password masked)."""
    study = session.study

    def objective(trial: optuna.Trial):
        if budget.trials is not None:
            ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                          TrialState.RUNNING))
                     if t.state == TrialState.COMPLETE or t.number < trial.number]
            if len(ahead) >= budget.trials:
                record_trial(trial, surplus=f"the study's {budget.trials} trials are complete "
                                            "or running elsewhere")
                raise optuna.TrialPruned()
        try:
            return run_trial(trial, context)
        except KeyboardInterrupt:
            record_trial(trial, failure="interrupted (Ctrl-C); enqueued again")
            interrupted.append(trial.number)
            raise
        except Exception as err:  # one trial's failure must not end the study
            reason = redact(f"{type(err).__name__}: {err}", getattr(session.storage, "url", ""))
            record_trial(trial, failure=reason[:2000])
            raise  # ReleaseAfterFailure frees what the trial held, once the error is gone

    return objective


def _run_trials(study: optuna.Study, objective: Callable, budget: Budget, callbacks: list,
                progress: Progress, started: float, poll_seconds: float,
                promote_share: float | None = None, min_promoted_steps: int = 1,
                twins: Int8Twins | None = None) -> None:
    """Run trials until the budget is spent: a study-wide trial total and/or this call's time.

    With a trial total, a worker starts a trial only while fewer than the total are complete
    or running; when the rest are running elsewhere it waits, failing stale trials (a dead
    worker's) so that they are retried. With a time budget and `promote_share`, the last
    share of the time fine-tunes the front longer, a round at a time (promotion.py): queued
    promotions run while any time is left; a new trial starts only if a typical one fits.
    With `twins` (a time budget, int8 searched), each fp32 front member is tried in int8 too.
    """
    deadline = None if budget.seconds is None else started + budget.seconds
    promote_at = None
    if deadline is not None and promote_share:
        promote_at = deadline - promote_share * budget.seconds
    outage = StorageOutage()
    while True:
        try:
            if _run_one(study, objective, budget, callbacks, progress, deadline, promote_at,
                        poll_seconds, min_promoted_steps, twins):
                return
            outage.answered()
        except Exception as err:  # a lost database connection is waited out
            outage.survive(err)


def _run_one(study: optuna.Study, objective: Callable, budget: Budget, callbacks: list,
             progress: Progress, deadline: float | None, promote_at: float | None,
             poll_seconds: float, min_promoted_steps: int,
             twins: Int8Twins | None) -> bool:
    """One pass of `_run_trials`: promotions, twins, one trial or a wait; True when the
    budget is spent."""
    now, typical = time.monotonic(), progress.typical_trial_seconds()
    if twins is not None and deadline is not None:
        twins.enqueue(study, progress.front.update(study))
    waiting = waiting_promotions(study) if deadline is not None else 0
    if promote_at is not None and now + typical > promote_at and not waiting:
        # a round at a time, from the front the callbacks already track
        waiting = len(promote_front(study, deadline - now, min_promoted_steps,
                                    progress.front.update(study)))
    if deadline is not None and now + (0.0 if waiting else typical) >= deadline:
        return True
    if budget.trials is not None:
        states = [t.state for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))]
        complete = states.count(TrialState.COMPLETE)
        if complete >= budget.trials:
            return True
        if len(states) >= budget.trials:
            optuna.storages.fail_stale_trials(study)
            time.sleep(poll_seconds)
            return False
    study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks,
                   gc_after_trial=False)
    return False


def _run(session: _Session, prepared: PreparedModel, context: TrialContext, budget: Budget,
         keep_checkpoints: str, write_report: bool, started: float,
         options: SearchOptions) -> None:
    """Run trials until the budget is spent; on Ctrl-C, requeue the cut trials and report."""
    interrupted: list[int] = []
    front = FrontTracker()  # one incremental front for both callbacks
    progress = Progress(budget, context.baseline.latency_ms, started, front)
    callbacks = [ReleaseAfterFailure(prepared.device), progress,
                 StopOnRepeatedFailure(options.max_repeated_failures)]
    precisions = prepared.space.precisions
    twins = Int8Twins() if options.int8_twins and {"fp32", "int8"} <= set(precisions) else None
    if keep_checkpoints == "front":
        callbacks.insert(0, CheckpointRetention(session.store, session.run_dir / "trials", front))
    try:
        with progress:
            _run_trials(session.study, _objective(session, context, budget, interrupted), budget,
                        callbacks, progress, started, options.poll_seconds,
                        options.promote_share, context.finetune_steps, twins)
    except KeyboardInterrupt:
        requeue_interrupted(session.study, interrupted)
        if write_report:
            report = session.result(prepared).report(session.run_dir / "report.html")
            logger.info(f"report of the trials so far: {report}")
        logger.info(f"interrupted. Finished trials are kept in {session.where}; to resume, run "
                    f"the same command again (study {session.study.study_name!r}); an "
                    "interrupted trial runs again first.")
        raise


def _finish(session: _Session, prepared: PreparedModel, baseline: dict, target: Target,
            write_report: bool, options: SearchOptions) -> SearchResult:
    """Re-time the front interleaved with the unpruned model, record the end, write the report."""
    result, front = session.result(prepared), {}
    if result.pareto:
        logger.info(f"re-measuring the {len(result.pareto)} front members interleaved with the "
                    "unpruned model ...")
        front = _loadable_front(result, prepared.device)
    if front:
        with ProgressBar("final re-timing", total=options.final_rounds, unit="round") as bar:
            final = interleaved_against_reference(front, prepared.model,
                                                  prepared.example_inputs, target,
                                                  rounds=options.final_rounds,
                                                  block_seconds=options.final_block_seconds,
                                                  on_round=lambda: bar.update(1))
        final["baseline"] = final.pop("reference")
        record_study(session.study, final_latency_ms=final)
        result = session.result(prepared)
    record_study(session.study, finished=datetime.now().isoformat(timespec="seconds"))
    if write_report:
        result.report_path = result.report(session.run_dir / "report.html")
        logger.info(f"report: {result.report_path}")
    unpruned_ms = StudyRecord.of(session.study).final_latency_of("baseline")
    logger.info(f"Pareto front ({len(result.pareto)} models; unpruned: "
                f"{result.shown(baseline['accuracy'])}, "
                f"{unpruned_ms or baseline['latency_ms']:.2f} ms):")
    for candidate in result.pareto:
        logger.info(f"  {candidate}")
    return result


def _loadable_front(result: SearchResult, device: torch.device) -> dict[str, nn.Module]:
    """The front members' models by trial number, on the timing device (checkpoints load on
    the CPU). With several workers, another one's newer
    trial can push a member off the front, and its checkpoint away, while this one finishes:
    that member is no longer the front's, and is left out of the re-timing."""
    front = {}
    for candidate in result.pareto:
        try:
            front[str(candidate.trial)] = result.load(candidate.trial).to(device)
        except CheckpointError:
            logger.info(f"trial {candidate.trial} left the front while this worker finished "
                        "(another worker's trial beat it): not re-timed")
    return front


def _room_for_derived_starts(space, budget: Budget, options: SearchOptions) -> int:
    """How many derived warm starts to enqueue: the space's number, but the references all
    together take at most half of the trials (a trial budget's, or the about
    `options.target_trials` a time budget plans for), the rest is the sampler's."""
    expected = budget.trials if budget.trials is not None else options.target_trials
    references = len(space.uniform_ratios) + len(space.warm_starts)
    return max(0, min(space.derived_warm_starts, expected // 2 - references))


def _shown_location(location: Any) -> str:
    """Where checkpoints go, as the settings record it: a resolved path, or the store's repr."""
    return str(Path(location).resolve()) if isinstance(location, (str, Path)) else repr(location)


def _with_accuracy_floor(constraints: dict[str, float], prepared: PreparedModel,
                         baseline: dict, builtin_metric: bool,
                         share: float | None) -> dict[str, float]:
    """The constraints the trials check: the user's, plus the default accuracy floor when the
    metric is the built-in top-1 (whose chance level the model's class count gives) and the
    user set none. Not part of the study's identity: a study from before it resumes."""
    if ACCURACY_FLOOR in constraints or not builtin_metric or share is None:
        return constraints
    with torch.no_grad():
        classes = logits_of(run_model(prepared.model, prepared.example_inputs)).shape[-1]
    floor = default_accuracy_floor(baseline["accuracy"], classes, share)
    logger.info(f"front floor: models below {floor:.1%} accuracy are not offered ({share:.0%} "
                f"of the way from chance, {1 / classes:.1%}, to the unpruned model's "
                f"{baseline['accuracy']:.1%}; set constraints={{'{ACCURACY_FLOOR}': ...}})")
    return {**constraints, ACCURACY_FLOOR: floor}


def _measurement(baseline: dict) -> Measurement:
    return Measurement(**{item.name: baseline[item.name] for item in fields(Measurement)})


def _gradient_batches(train: Iterable, device: torch.device, options: SearchOptions) -> list:
    """The first training batches, on the device, for criteria that need gradients (Taylor)."""
    return [to_device(batch, device)
            for batch in itertools.islice(train, options.gradient_batches)]


@contextlib.contextmanager
def _random_state_restored():
    """torch's random state as it was before the call: a search seeds its own draws."""
    devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield


def search(
    model: nn.Module,
    budget: str | int | float | None = None,
    *,
    trials: int | None = None,
    train: Iterable,
    val: Iterable | None = None,
    constraints: dict[str, float] | None = None,
    device: str | torch.device = "cpu",
    target: str | None = None,
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    direction: str = MAXIMIZE,
    train_step: Callable[[nn.Module, nn.Module, Any], torch.Tensor] | None = None,
    distill: Callable[[Any, Any, Any], torch.Tensor] | None = None,
    example_inputs: Any = None,
    search_space: str | Path | SearchSpace | None = None,
    ignored_layers: Iterable[str] = (),
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    output_dir: str | Path = "reports",
    artifacts: Any = None,
    finetune_steps: int | None = None,
    threads: int | None = None,
    seed: int | None = 0,
    keep_checkpoints: str = "front",
    write_report: bool = True,
    verbose: bool = True,
    extra_settings: dict | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    early_stop_margin: float | None | str = "auto",
    options: SearchOptions | None = None,
) -> SearchResult:
    """Search for pruned versions of `model` trading accuracy against latency and memory.

    `budget`: this call's wall-clock time ("90s", "20m", "8h" or seconds); `trials`: the
    study's total of completed trials, across restarts and workers. `train`, `val`: iterables
    of (inputs, targets) for the built-in classifier (top-1 accuracy, or `metric(logits,
    targets)`; cross-entropy, or `loss`, plus distillation on the logits).

    Any other task (runtime/task.py): `evaluate(model) -> float` scores a model however it
    likes (the model on `device`, eval mode, gradients off), better as `direction` says
    ("maximize" or "minimize"); `train_step(student, teacher, batch) -> loss` or
    `distill(student_output, teacher_output, batch) -> loss` (the models run on `batch[0]`)
    replaces the built-in loss; `example_inputs` when a batch's first item is not what the
    model takes. `val` is then optional. The same `study_name` and `storage` resume a study; several processes
    (machines, with PostgreSQL and a shared `artifacts` directory) join it. Returns a
    `SearchResult` whose `pareto` lists the non-dominated models by latency. `target`: how
    latency is timed (targets/; default: PyTorch eager on `device`'s type). `keep_checkpoints`
    "front" deletes the weights of trials off the front; `sampler` replaces multivariate TPE;
    `early_stop_margin` stops a trial a third into fine-tuning when a finished, at least as
    fast trial scored that much better there, in the metric's units ("auto": 0.02 for the
    built-in metric, never for `evaluate`; None: never; see early_stop.py). Messages go
    to the `autoprune` logger, warnings only with `verbose=False`; `options`: rare knobs.
    """
    started = time.monotonic()  # a time budget counts the whole call, set-up included
    # The caller's logging levels, Optuna verbosity and torch random state come back after.
    with verbosity(verbose), quiet_optuna(failures_too=True), _random_state_restored():
        # 1. validate: every argument, before any work
        if early_stop_margin == "auto":
            early_stop_margin = 0.02 if evaluate is None and not is_causal_lm(model) else None
        _validate(model, finetune_steps, early_stop_margin, keep_checkpoints)
        if study_name is not None:
            check_study_name(study_name)
        parsed_budget = parse_budget(budget, trials)
        parsed_constraints = parse_constraints(constraints)
        device, options = resolve_device(device), options or SearchOptions()
        task, user = _task(model, val, device, metric, loss, evaluate, direction, train_step,
                           distill)
        if task.direction != MAXIMIZE and ACCURACY_FLOOR in parsed_constraints:
            raise InvalidInputError(f"the {ACCURACY_FLOOR} constraint is a floor for a maximized "
                                    "metric; with direction='minimize' use max_accuracy_drop "
                                    "(the largest allowed rise of the metric)")
        timing_target = get_target(target, device, threads)
        timing_target.decode_tokens = options.decode_tokens
        timing_target.lm_latency = options.lm_latency
        metric, loss_fn = metric or top1_accuracy, loss or F.cross_entropy
        ignored_layers = [ignored_layers] if isinstance(ignored_layers, str) else ignored_layers
        space = resolve_search_space(model, search_space).for_target(
            timing_target.name, timing_target.precisions)
        # 2. prepare: the model set up for pruning, checked by pruning it once
        prepared = _prepare(model, train, val, space, ignored_layers, device, metric, loss_fn,
                            task, user, timing_target, example_inputs)
        # 3. open the study, or join it
        session = _open_or_join(prepared, parsed_constraints, parsed_budget, storage,
                                study_name, output_dir, artifacts, sampler, seed, task,
                                timing_target)
        session.finetune_inputs = {"data": (train, val), "metric": metric, "loss": loss_fn,
                                   "task": task}
        if seed is not None:
            torch.manual_seed(seed)
        # 4. the unpruned model, measured once per study
        settings = {"artifacts": _shown_location(session.artifact_location),
                    "constraints": parsed_constraints, "budget": parsed_budget.describe(),
                    "data": describe_data(train, val), "early_stop_margin": early_stop_margin,
                    "finetune_optimizer": space.optimizer, "metric": task.describe(),
                    **(extra_settings or {})}
        baseline = measure_baseline(session.study, prepared, task, timing_target,
                                    options.latency_rounds, options.block_seconds, settings)
        fresh_latency_model = StudyRecord.of(session.study).latency_model is None
        latency_model = study_latency_model(session.study, prepared, timing_target,
                                            options.calibration_points, options.latency_rounds,
                                            options.block_seconds, seed,
                                            options.table_block_seconds,
                                            options.latency_max_rounds)
        if fresh_latency_model:  # built here: this process reads the derived starts from it
            enqueue_derived_starts(session.study, prepared, latency_model,
                                   _room_for_derived_starts(space, parsed_budget, options))
        baseline = settled_reference(session.study, baseline, latency_model)
        check_reachable_latency(parsed_constraints, baseline["latency_ms"],
                                fastest_speedup(space, prepared.dimensions, latency_model),
                                TrialContext.prediction_margin,
                                exact=space.precisions == ("fp32",) and space.depth[1] == 0)
        trial_constraints = _with_accuracy_floor(parsed_constraints, prepared, baseline,
                                                 task.top1,
                                                 options.front_floor_share)
        recorded = StudyRecord.of(session.study).settings or {}
        if trial_constraints.get(ACCURACY_FLOOR) and "accuracy_floor" not in recorded:
            record_study(session.study, settings={
                **recorded, "accuracy_floor": trial_constraints[ACCURACY_FLOOR]})
        # 5. plan fine-tuning, the same for every trial of the study
        steps = _plan_finetuning(session, prepared, parsed_budget, finetune_steps, train,
                                 task.loss, options)
        # 6. run the trials
        context = TrialContext(
            prepared=prepared, train=train, val=val, target=timing_target,
            latency_model=latency_model, finetune_steps=steps,
            constraints=trial_constraints, baseline_accuracy=baseline["accuracy"],
            baseline=_measurement(baseline), artifact_store=session.store, task=task,
            gradient_batches=_gradient_batches(train, device, options),
            latency_rounds=options.latency_rounds, block_seconds=options.block_seconds,
            latency_max_rounds=options.latency_max_rounds,
            prediction_weight=options.latency_prediction_weight,
            early_stop_margin=early_stop_margin, save_dominated=keep_checkpoints == "all",
            calibration=(calibration_inputs(train, options.calibration_batches)
                         if "int8" in space.precisions else []),
            study_uid=StudyRecord.of(session.study).uid)
        _run(session, prepared, context, parsed_budget, keep_checkpoints, write_report, started,
             options)
        # 7. finish: re-time the front, report
        return _finish(session, prepared, baseline, timing_target, write_report, options)

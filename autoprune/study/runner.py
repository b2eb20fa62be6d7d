"""`search()`: validate everything, measure the unpruned model, run the Optuna study.

Bad input fails here before any trial, with a specific message. Inside the study, a trial
that raises is recorded as failed with its reason (`failure` user attribute) and the study
goes on.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import logging
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
import torch
import torch.nn as nn
import torch.nn.functional as F
from optuna.trial import TrialState

from ..console import ProgressBar, quiet_optuna, verbosity
from ..errors import InvalidInputError
from ..integrations.models import model_source
from ..pruning.conversions import prepare
from ..pruning.grouping import check_prunable, ignored_modules, plan_dimensions
from ..pruning.prune import kept_out_channels, prune_copy
from ..results.result import SearchResult
from ..runtime.evaluate import evaluate, top1_accuracy
from ..runtime.finetune import Distillation, finetune
from ..runtime.measure import Measurement, interleaved_latency_ms, measure
from ..runtime.model_io import batch_size_of, first_batch, logits_of, run_model, to_device
from ..store.storage import open_artifact_store, open_storage, redact, storage_url
from .budget import Budget, parse_budget
from .callbacks import CheckpointRetention, Progress, ReleaseAfterFailure
from .config import config_from_params, reference_params, uniform_params
from .constraints import parse_constraints
from .preflight import preflight
from .space import SearchSpace, model_identifiers, resolve_search_space
from .trial import TrialContext, run_trial

OBJECTIVE_NAMES = ("accuracy", "latency_ms", "memory_mb")  # what dashboards and plots call them
DIRECTIONS = ("maximize", "minimize", "minimize")
TARGET_TRIALS = 15  # a time budget is split so that about this many trials fit
MAX_FINETUNE_EPOCHS = 3
GRADIENT_BATCHES = 2  # batches of gradients for the Taylor criterion
LATENCY_MIN_RUN_TIME = 0.3  # seconds of timed runs per latency measurement in a trial
FINAL_ROUNDS = 5  # interleaved rounds when the front is re-measured at the end

logger = logging.getLogger(__name__)


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidInputError(f"unknown device {device!r}: use 'cpu' or 'cuda'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device='cuda' was asked for, but PyTorch sees no CUDA GPU; "
                                "use device='cpu'")
    if device.type not in ("cpu", "cuda"):
        raise InvalidInputError(f"device {device!r} is not supported yet: use 'cpu' or 'cuda'")
    return device


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


def _library_versions() -> dict[str, str]:
    import platform

    import timm
    import torch_pruning

    return {"python": platform.python_version(), "torch": torch.__version__,
            "optuna": optuna.__version__, "torch_pruning": getattr(torch_pruning, "__version__", "?"),
            "timm": timm.__version__, "autoprune": __import__("autoprune").__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                       f"{__import__('os').cpu_count()} CPUs"}


def _describe_data(train: Iterable, val: Iterable) -> dict[str, Any]:
    def size(loader):
        dataset = getattr(loader, "dataset", None)
        try:
            return len(dataset) if dataset is not None else None
        except TypeError:
            return None

    return {"train_samples": size(train), "val_samples": size(val),
            "train_batches": _epoch_steps(train)}


def _default_study_name(model: nn.Module) -> str:
    return f"{model_identifiers(model)[0]}-{datetime.now():%Y%m%d-%H%M%S}"


def _epoch_steps(train: Iterable) -> int:
    try:
        return max(1, len(train))  # type: ignore[arg-type]
    except TypeError:
        return 50


def _training_step_seconds(student: nn.Module, teacher: nn.Module, train: Iterable,
                           device: torch.device, loss_fn: Callable, optimizer: str) -> float:
    """Seconds per KD fine-tuning step of `student` (a copy; its weights are thrown away)."""
    student = copy.deepcopy(student)
    finetune(student, teacher, train, 1, 1e-4, Distillation(), device, loss_fn, optimizer)
    start = time.perf_counter()
    finetune(student, teacher, train, 3, 1e-4, Distillation(), device, loss_fn, optimizer)
    return (time.perf_counter() - start) / 3


def choose_finetune_steps(budget: Budget, train: Iterable, typical_student: nn.Module,
                          teacher: nn.Module, device: torch.device, loss_fn: Callable,
                          optimizer: str) -> int:
    """Fine-tuning steps per trial: one epoch for a trial budget; else what fits the time.

    A time budget is split into TARGET_TRIALS trials, 70 % of each spent fine-tuning, at the
    step time of `typical_student` (the model pruned uniformly at the middle reference
    ratio), between 10 steps and 3 epochs.
    """
    epoch = _epoch_steps(train)
    if budget.seconds is None:
        return epoch
    step = _training_step_seconds(typical_student, teacher, train, device, loss_fn, optimizer)
    steps = int(0.7 * budget.seconds / TARGET_TRIALS / step)
    chosen = max(10, min(MAX_FINETUNE_EPOCHS * epoch, steps))
    logger.info(f"fine-tuning: {chosen} steps per trial ({chosen / epoch:.2f} epochs; a step of a "
        f"typical pruned model takes {step * 1e3:.0f} ms)")
    return chosen


KEEP_CHECKPOINTS = ("front", "all")
POLL_SECONDS = 2.0  # how often a worker waiting for others' trials looks again


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's state (names, shapes and values): what "the same model" means."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _random_state_restored():
    """torch's random state as it was before the call: a search seeds its own draws."""
    devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield


def _open_study(name: str, storage, sampler) -> tuple[optuna.Study, bool]:
    """The study and whether this call created it (only the creator enqueues references)."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    directions=DIRECTIONS)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        created = False
    directions = [d.name.lower() for d in study.directions]
    if directions != list(DIRECTIONS):
        raise InvalidInputError(f"study {name!r} exists in this storage but is not an autoprune "
                                f"study (directions {directions}); choose another study name")
    if study.metric_names is None:  # also studies started before autoprune named them
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVE_NAMES))
    return study, created


def _check_same_search(study: optuna.Study, identity: dict, where: str) -> None:
    """Refuse to add trials to a study that was started for another model or space."""
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        return
    current = json.loads(json.dumps(identity))
    differing = [key for key in current if stored.get(key) != current[key]]
    if differing:
        raise InvalidInputError(
            f"study {study.study_name!r} in {where} was started by a different search: its "
            f"{', '.join(differing)} differ from this one's. Results of different searches must "
            "not mix: use another study name, or the same model, data and search space.")


def _run_trials(study: optuna.Study, objective: Callable, budget: Budget, callbacks: list,
                progress: Progress, started: float) -> None:
    """Run trials until the budget is spent: a study-wide trial total and/or this call's time.

    With a trial total, a worker starts a trial only while fewer than the total are complete
    or running; when the rest are running elsewhere it waits, failing stale trials (a dead
    worker's) so that they are retried.
    """
    deadline = None if budget.seconds is None else started + budget.seconds
    while True:
        if deadline is not None and time.monotonic() + progress.typical_trial_seconds() > deadline:
            return
        if budget.trials is not None:
            states = [t.state for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))]
            complete = states.count(TrialState.COMPLETE)
            if complete >= budget.trials:
                return
            if len(states) >= budget.trials:
                optuna.storages.fail_stale_trials(study)
                time.sleep(POLL_SECONDS)
                continue
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks,
                       gc_after_trial=False)


def _requeue_interrupted(study: optuna.Study, numbers: list[int]) -> None:
    """Enqueue again, with the same parameters, the trials a Ctrl-C cut short."""
    trials = study.get_trials(deepcopy=False)
    for number in numbers:
        study.enqueue_trial(trials[number].params, user_attrs={"retry_of": number},
                            skip_if_exists=False)


def search(
    model: nn.Module,
    budget: str | int | float | None = None,
    *,
    trials: int | None = None,
    train: Iterable,
    val: Iterable,
    constraints: dict[str, float] | None = None,
    device: str | torch.device = "cpu",
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
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
    early_stop_margin: float | None = 0.02,
) -> SearchResult:
    """Search for pruned versions of `model` trading accuracy against latency and memory.

    `budget` is this call's wall-clock time ("90s", "20m", "8h" or seconds) and/or `trials`
    the study's total of completed trials, across restarts and workers. `train` and `val`
    are iterables of (inputs, targets). Calling it again with the same `study_name` and
    `storage` resumes the study; running it in several processes (on several machines with a
    PostgreSQL `storage` and a shared `artifacts` directory) adds workers to it. Returns a
    `SearchResult` whose `pareto` lists the non-dominated models sorted by latency.
    `keep_checkpoints` "front" deletes the weights of trials that fall off the front.
    `sampler` replaces the multivariate TPE sampler (the benchmark's random search uses it).
    `early_stop_margin`: a trial whose metric a third of the way through fine-tuning is this
    much below that of a finished, at least as fast trial at the same point stops there
    (see early_stop.py); None fine-tunes every trial to the end. Messages go to the
    `autoprune` logger; `verbose=False` keeps them to warnings for this call (see console.py).
    """
    started = time.monotonic()  # a time budget counts the whole call, set-up included
    # Globals the caller owns (logging levels, Optuna's verbosity, torch's random state)
    # are changed only for the length of the call.
    with verbosity(verbose), quiet_optuna(), _random_state_restored():
        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        parsed_budget = parse_budget(budget, trials)
        parsed_constraints = parse_constraints(constraints)
        device = _resolve_device(device)
        if finetune_steps is not None and (not isinstance(finetune_steps, int) or finetune_steps < 0):
            raise InvalidInputError(f"finetune_steps must be a non-negative integer, got {finetune_steps!r}")
        if early_stop_margin is not None and (isinstance(early_stop_margin, bool) or not isinstance(
                early_stop_margin, (int, float)) or not early_stop_margin >= 0):
            raise InvalidInputError(f"early_stop_margin must be a non-negative number or None, "
                                    f"got {early_stop_margin!r}")
        if keep_checkpoints not in KEEP_CHECKPOINTS:
            raise InvalidInputError(f"keep_checkpoints must be one of {KEEP_CHECKPOINTS}, "
                                    f"got {keep_checkpoints!r}")
        threads = threads or torch.get_num_threads()
        metric = metric or top1_accuracy
        loss_fn = loss or F.cross_entropy
        if isinstance(ignored_layers, str):
            ignored_layers = [ignored_layers]
        space = resolve_search_space(model, search_space)

        example_inputs, example_targets = first_batch(val, "val")
        first_batch(train, "train")
        model = prepare(model.to(device).eval())  # a converted copy for GPT-2 (see conversions.py)
        example_inputs = to_device(example_inputs, device)
        _check_model_runs(model, example_inputs, to_device(example_targets, device), metric, loss_fn)

        ignored = ignored_modules(model, example_inputs, [*space.ignored_layers, *ignored_layers])
        names = {module: name for name, module in model.named_modules()}
        ignored_names = [names[m] for m in ignored if m in names]
        dimensions = plan_dimensions(model, example_inputs, space.stage_pattern,
                                     space.max_dimensions, ignored)
        check_prunable(dimensions, type(model).__name__)
        preflight(model, example_inputs, dimensions, space, ignored_names, device)

        study_name = study_name or _default_study_name(model)
        run_dir = Path(output_dir) / study_name
        storage = open_storage(storage or f"sqlite:///{run_dir / 'study.db'}")
        where = storage_url(storage)  # password masked: it is logged and reported
        identity = {"model": f"{type(model).__module__}.{type(model).__qualname__} "
                             f"{model_identifiers(model)[0]}",
                    "weights_sha256": model_fingerprint(model), "search_space": space.fingerprint(),
                    "dimensions": [d.name for d in dimensions], "constraints": parsed_constraints,
                    "device": device.type, "batch_size": batch_size_of(example_inputs)}
        sampler = sampler or optuna.samplers.TPESampler(
            multivariate=True, seed=seed, constant_liar=True,
            n_startup_trials=max(8, len(space.uniform_ratios) + len(space.warm_starts) + 5))
        study, created = _open_study(study_name, storage, sampler)
        _check_same_search(study, identity, where)
        if created:  # enqueued once per study, whatever the number of workers
            for ratio in space.uniform_ratios:
                study.enqueue_trial(uniform_params(space, dimensions, ratio),
                                    user_attrs={"reference": f"uniform {ratio:g}"})
            for ratios in space.warm_starts:
                study.enqueue_trial(reference_params(space, dimensions, ratios), user_attrs={
                    "reference": "warm start: " + ", ".join(f"{kind} {ratio:g}"
                                                            for kind, ratio in ratios.items())})
        artifact_location = artifacts if artifacts is not None else run_dir / "artifacts"
        store = open_artifact_store(artifact_location)
        cache_dir = run_dir / "trials"
        logger.info(f"autoprune: study {study_name!r} ({'new' if created else 'resumed or joined'}) in "
            f"{where}; checkpoints in {artifact_location}; report in {run_dir}/")
        logger.info(f"search space {space.family!r} ({space.source}): {len(dimensions)} sparsity dimensions, "
            f"criteria {', '.join(space.criteria)}; budget {parsed_budget.describe()}")

        if seed is not None:
            torch.manual_seed(seed)
        baseline = study.user_attrs.get("baseline")
        if baseline is None:  # also a worker whose creator died before measuring it
            logger.info("measuring the unpruned model ...")
            with ProgressBar("unpruned model", total=2) as bar:
                accuracy = evaluate(model, val, device, metric)
                bar.update(1)
                figures = measure(model, example_inputs, device, threads, LATENCY_MIN_RUN_TIME)
                bar.update(1)
            baseline = {"accuracy": accuracy, **figures.to_dict()}
            study.set_user_attr("base_channels", kept_out_channels(model))
            study.set_user_attr("settings", {
                "model": model_identifiers(model)[0], "model_source": model_source(model),
                "artifacts": str(Path(artifact_location).resolve())
                if isinstance(artifact_location, (str, Path)) else repr(artifact_location),
                "space": space.fingerprint(), "dimensions": [d.to_dict() for d in dimensions],
                "device": str(device), "threads": threads, "batch_size": batch_size_of(example_inputs),
                "constraints": parsed_constraints, "budget": parsed_budget.describe(),
                "started": datetime.now().isoformat(timespec="seconds"),
                "data": _describe_data(train, val), "versions": _library_versions(),
                "early_stop_margin": early_stop_margin,
                **(extra_settings or {})})
            study.set_user_attr("baseline", baseline)
        logger.info(f"unpruned: accuracy {baseline['accuracy']:.2%}, latency {baseline['latency_ms']:.2f} ms "
            f"at batch {batch_size_of(example_inputs)}, memory {baseline['memory_mb']:.1f} MiB, "
            f"{baseline['params'] / 1e6:.2f} M params, {baseline['macs'] / 1e6:.1f} M MACs")

        steps = finetune_steps if finetune_steps is not None else study.user_attrs.get("finetune_steps")
        if steps is None:  # the first process decides, so every trial of the study is alike
            middle = sorted(space.uniform_ratios or [0.5])[len(space.uniform_ratios) // 2]
            typical = prune_copy(model, example_inputs, dimensions,
                                 config_from_params(uniform_params(space, dimensions, middle),
                                                    dimensions, space).sparsity,
                                 "l2", ignored_names, space.round_to, device=device).model
            steps = choose_finetune_steps(parsed_budget, train, typical, model, device, loss_fn,
                                          space.optimizer)
            study.set_user_attr("finetune_steps", steps)

        context = TrialContext(
            base_model=model, example_inputs=example_inputs, dimensions=dimensions,
            ignored_names=ignored_names, space=space, train=train, val=val, device=device,
            threads=threads, finetune_steps=steps, constraints=parsed_constraints,
            baseline_accuracy=baseline["accuracy"],
            baseline=Measurement(**{k: v for k, v in baseline.items() if k != "accuracy"}),
            artifact_store=store, metric=metric, loss_fn=loss_fn,
            gradient_batches=[to_device(b, device) for b in itertools.islice(train, GRADIENT_BATCHES)],
            latency_run_time=LATENCY_MIN_RUN_TIME, early_stop_margin=early_stop_margin)
        interrupted: list[int] = []

        def objective(trial: optuna.Trial):
            if parsed_budget.trials is not None:
                ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                              TrialState.RUNNING))
                         if t.state == TrialState.COMPLETE or t.number < trial.number]
                if len(ahead) >= parsed_budget.trials:
                    trial.set_user_attr("surplus", f"the study's {parsed_budget.trials} trials are "
                                                   "complete or running elsewhere")
                    raise optuna.TrialPruned()
            try:
                return run_trial(trial, context)
            except KeyboardInterrupt:
                trial.set_user_attr("failure", "interrupted (Ctrl-C); enqueued again")
                interrupted.append(trial.number)
                raise
            except Exception as err:  # one trial's failure must not end the study
                reason = redact(f"{type(err).__name__}: {err}", getattr(storage, "url", ""))
                trial.set_user_attr("failure", reason[:2000])
                raise  # ReleaseAfterFailure frees what the trial held, once the error is gone

        progress = Progress(parsed_budget, baseline["latency_ms"], started)
        callbacks = [ReleaseAfterFailure(device), progress]
        if keep_checkpoints == "front":
            callbacks.insert(0, CheckpointRetention(store, cache_dir))
        result = SearchResult(study, model, store, cache_dir, storage=where)
        try:
            with progress:
                _run_trials(study, objective, parsed_budget, callbacks, progress, started)
        except KeyboardInterrupt:
            _requeue_interrupted(study, interrupted)
            if write_report:
                logger.info(f"report of the trials so far: {result.report(run_dir / 'report.html')}")
            logger.info(f"interrupted. Finished trials are kept in {where}; to resume, run the same command "
                f"again (study {study_name!r}); an interrupted trial runs again first.")
            raise

        result = SearchResult(study, model, store, cache_dir, storage=where)
        if result.pareto:
            logger.info(f"re-measuring the {len(result.pareto)} front members interleaved with the unpruned model ...")
            front = {str(c.trial): result.load(c.trial) for c in result.pareto}
            with ProgressBar("final re-timing", total=FINAL_ROUNDS, unit="round") as bar:
                final = interleaved_latency_ms({"baseline": model, **front}, example_inputs, device,
                                               threads, rounds=FINAL_ROUNDS,
                                               min_run_time=LATENCY_MIN_RUN_TIME,
                                               on_round=lambda: bar.update(1))
            study.set_user_attr("final_latency_ms", final)
            result = SearchResult(study, model, store, cache_dir, storage=where)
        study.set_user_attr("finished", datetime.now().isoformat(timespec="seconds"))
        if write_report:
            result.report_path = result.report(run_dir / "report.html")
            logger.info(f"report: {result.report_path}")
        logger.info(f"Pareto front ({len(result.pareto)} models; unpruned: {baseline['accuracy']:.2%}, "
            f"{study.user_attrs.get('final_latency_ms', {}).get('baseline', baseline['latency_ms']):.2f} ms):")
        for candidate in result.pareto:
            logger.info(f"  {candidate}")
        return result

"""What a search returns: the Pareto front as plain records, and access to its models."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
import torch
import torch.nn as nn
from optuna.trial import FrozenTrial

from ..errors import CheckpointError, InvalidInputError, NoCandidateError
from ..runtime.task import (ACCURACY, MAXIMIZE, Task, classification_task, cost, metric_of,
                            show_metric, user_task)
from ..store.artifacts import local_checkpoint, local_finetuned, store_finetuned
from ..store.checkpoint import load_checkpoint
from ..store.records import StudyRecord, TrialRecord
from .pareto import front_trials


@dataclass(frozen=True)
class Candidate:
    """One model on the Pareto front, with the figures a user picks by."""

    trial: int
    accuracy: float
    latency_ms: float
    speedup: float
    memory_mb: float
    params: int
    macs: int
    config: dict[str, Any] = field(repr=False)
    brief_accuracy: float | None = None   # the search's, when `accuracy` is a full fine-tune's
    finetuned_epochs: int | None = None   # epochs of that full fine-tune (SearchResult.finetune)
    # `accuracy` is the study's metric: its name, direction, and whether it is a percentage
    metric: dict = field(default_factory=lambda: dict(ACCURACY), repr=False, compare=False)
    precision: str = "fp32"  # "int8": the figures are the quantized graph's (export as onnx)

    def __str__(self) -> str:
        text = (f"trial {self.trial:>4}: {self.metric['name']} "
                f"{show_metric(self.accuracy, self.metric):>7}  latency {self.latency_ms:7.2f} ms "
                f"({self.speedup:4.2f}x)  memory {self.memory_mb:6.1f} MiB  params "
                f"{self.params / 1e6:6.2f} M  MACs {self.macs / 1e6:7.1f} M  {self.config['criterion']}"
                + ("  int8" if self.precision == "int8" else ""))
        if self.finetuned_epochs is not None:
            text += (f"  (fine-tuned {self.finetuned_epochs} epochs; brief "
                     f"{show_metric(self.brief_accuracy, self.metric)})")
        return text


def candidate_from_trial(trial: FrozenTrial, baseline_latency_ms: float,
                         final_latency_ms: dict | None = None,
                         finetuned: dict | None = None, metric: dict | None = None) -> Candidate:
    """A `Candidate`; latency comes from the interleaved final re-measurement when there is
    one, accuracy from a full fine-tune of the trial (`finetuned`) when there is one."""
    record = TrialRecord.of(trial)
    figures = record.measurement
    final = (final_latency_ms or {})
    latency = final.get(str(trial.number), figures["latency_ms"])
    baseline = final.get("baseline", baseline_latency_ms)
    full = (finetuned or {}).get(str(trial.number))
    return Candidate(trial=trial.number, accuracy=full["accuracy"] if full else trial.values[0],
                     latency_ms=latency, speedup=baseline / latency,
                     memory_mb=figures["memory_mb"], params=figures["params"],
                     macs=figures["macs"], config=record.config,
                     brief_accuracy=trial.values[0] if full else None,
                     finetuned_epochs=full["epochs"] if full else None,
                     metric=dict(metric or ACCURACY),
                     precision=(record.config or {}).get("precision", "fp32"))


class SearchResult:
    """A finished (or stopped) search: its front, its unpruned reference, and its models."""

    def __init__(self, study: optuna.Study, base_model: nn.Module | None, artifact_store,
                 cache_dir: Path, report_path: Path | None = None, storage: str | None = None,
                 teacher: nn.Module | None = None, data: tuple | None = None,
                 metric: Callable | None = None, loss: Callable | None = None,
                 task: Task | None = None):
        self.study = study
        self.storage = storage  # the URL as shown: password masked (see storage.py)
        self.base_model = base_model
        self.artifact_store = artifact_store
        self.cache_dir = Path(cache_dir)  # where checkpoints are downloaded to on this machine
        self.report_path = report_path
        # what finetune() needs: the trained original (base_model may be rebuilt, untrained),
        # the search's (train, val), metric and loss, or the user's task (evaluate=, ...)
        self.teacher, self.data, self.metric_fn, self.loss = teacher, data, metric, loss
        self.task = task
        self._refresh()

    def _refresh(self) -> None:
        record = StudyRecord.of(self.study)
        self.uid = record.uid  # checked against every checkpoint this result loads
        self.baseline = record.baseline
        self.finetuned = record.finetuned or {}
        # the metric the study ranks by: its name, direction and whether it is a percentage
        self.metric: dict = metric_of(self.study)
        self.pareto: list[Candidate] = sorted(
            (candidate_from_trial(t, self.baseline["latency_ms"], record.final_latency_ms,
                                  self.finetuned, self.metric) for t in front_trials(self.study)),
            key=lambda c: c.latency_ms)

    @classmethod
    def from_storage(cls, study_name: str, storage: str, base_model: nn.Module | None = None,
                     artifacts=None, cache_dir: str | Path | None = None,
                     output_dir: str | Path = "reports") -> "SearchResult":
        """Reopen a study (finished or still running) from its storage.

        Without `base_model`, a timm model is rebuilt from the architecture recorded in the
        study; any other model must be given to load or export trials. `artifacts` defaults to
        the artifact directory the search used; `cache_dir` (where checkpoints are fetched to)
        to the `trials` folder of the study's folder in `output_dir`.
        """
        from ..store.folders import existing_study_folder
        from ..integrations.models import rebuild_base_model
        from ..store.storage import open_artifact_store, storage_url

        study = optuna.load_study(study_name=study_name, storage=storage)
        settings = StudyRecord.of(study).settings or {}
        teacher = base_model  # a rebuilt architecture has random weights: no teacher
        if base_model is None:
            base_model = rebuild_base_model(settings.get("model_source"))
        store = open_artifact_store(artifacts or settings["artifacts"])
        cache = Path(cache_dir) if cache_dir else existing_study_folder(
            output_dir, study_name, StudyRecord.of(study).uid) / "trials"
        return cls(study, base_model, store, cache, storage=storage_url(storage),
                   teacher=teacher)

    def best(self, max_latency_ms: float | None = None, max_memory_mb: float | None = None,
             min_accuracy: float | None = None, max_params: int | None = None,
             precision: str | None = None) -> Candidate:
        """The front member with the best metric within the given limits. `min_accuracy`: the
        metric no worse than this (at least it when the study maximizes the metric, at most it
        when it minimizes one, such as an error); `precision`: "fp32" or "int8" only."""
        limits = {"latency_ms": max_latency_ms, "memory_mb": max_memory_mb, "params": max_params}
        direction = self.metric["direction"]

        def fits(c: Candidate) -> bool:
            return (all(limit is None or getattr(c, key) <= limit for key, limit in limits.items())
                    and (precision is None or c.precision == precision)
                    and (min_accuracy is None
                         or cost(c.accuracy, direction) <= cost(min_accuracy, direction)))

        fitting = [c for c in self.pareto if fits(c)]
        if not fitting:
            asked = ", ".join(f"{k} <= {v}" for k, v in limits.items() if v is not None)
            if min_accuracy is not None:
                asked += ((", " if asked else "") + f"{self.metric['name']} "
                          f"{'>=' if direction == MAXIMIZE else '<='} {min_accuracy}")
            if precision is not None:
                asked += (", " if asked else "") + f"precision {precision}"
            closest = "; ".join(f"trial {c.trial}: {self.shown(c.accuracy)} at "
                                f"{c.latency_ms:.2f} ms, {c.memory_mb:.1f} MiB"
                                for c in self.pareto[:5])
            raise NoCandidateError(f"no model on the front meets {asked or 'the limits'}; "
                                   f"the front has {closest or 'no model yet'}")
        return min(fitting, key=lambda c: (cost(c.accuracy, direction), c.latency_ms))

    def shown(self, value: float) -> str:
        """A metric value as the report and messages show it."""
        return show_metric(value, self.metric)

    def export(self, trial: int | Candidate, path: str | Path, format: str = "safetensors",
               brief: bool = False) -> Path:
        """Write `trial`'s model to `path` as safetensors+JSON, ONNX or TorchScript, verified
        (its full fine-tune's weights when there is one, unless `brief`)."""
        from .export import export_checkpoint

        number = trial.trial if isinstance(trial, Candidate) else int(trial)
        self._require_base_model()
        return export_checkpoint(self.checkpoint_path(number, brief), self.base_model, path,
                                 format)

    def _require_base_model(self) -> None:
        if self.base_model is None:
            raise CheckpointError("this study's model is not a timm model autoprune can rebuild: "
                                  "pass base_model= (the model you searched) to load or export")

    def checkpoint_path(self, trial: int, brief: bool = False) -> Path:
        """The local directory of `trial`'s checkpoint, fetched from the artifact store: its
        full fine-tune's when there is one (unless `brief`), else the search's."""
        full = None if brief else StudyRecord.of(self.study).finetuned or {}
        if full and str(trial) in full:
            return local_finetuned(trial, full[str(trial)], self.artifact_store, self.cache_dir,
                                   self.uid)
        return local_checkpoint(self._trial(trial), self.artifact_store, self.cache_dir,
                                self.uid)

    def _trial(self, number: int) -> FrozenTrial:
        """Trial `number` of the study, or a clear error (never a negative index)."""
        trials = self.study.get_trials(deepcopy=False)
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < len(trials):
            raise InvalidInputError(f"study {self.study.study_name!r} has no trial {number!r}: "
                                    f"its trials are numbered 0 to {len(trials) - 1}")
        return trials[number]

    def load(self, trial: int | Candidate, brief: bool = False) -> nn.Module:
        """The pruned, fine-tuned model of `trial`, rebuilt from the base model, in eval mode:
        with its full fine-tune's weights when there is one, unless `brief`. For an int8
        trial these are its fp32 weights before quantization (`load_int8` runs the graph)."""
        number = trial.trial if isinstance(trial, Candidate) else int(trial)
        self._require_base_model()
        return load_checkpoint(self.checkpoint_path(number, brief), self.base_model)

    def load_int8(self, trial: int | Candidate, threads: int = 1) -> nn.Module:
        """An int8 trial's quantized graph in an ONNX Runtime session, called like a module
        (runtime/quantize.py): the model its figures are of."""
        from ..runtime.quantize import OnnxModule
        from ..store.checkpoint import INT8_GRAPH_FILE

        number = trial.trial if isinstance(trial, Candidate) else int(trial)
        graph = self.checkpoint_path(number, brief=True) / INT8_GRAPH_FILE
        if not graph.is_file():
            raise InvalidInputError(f"trial {number} is not an int8 trial")
        return OnnxModule(graph.read_bytes(), threads)

    def finetune(self, trial: int | Candidate, epochs: int, train: Iterable | None = None,
                 val: Iterable | None = None, lr: float | None = None,
                 alpha: float | None = None, temperature: float | None = None,
                 optimizer: str | None = None, device: str | torch.device = "cpu",
                 restart: bool = False, evaluate: Callable | None = None,
                 train_step: Callable | None = None,
                 distill: Callable | None = None) -> nn.Module:
        """Fine-tune `trial`'s model for `epochs` passes over `train`, distilling from the
        original model, and keep the best epoch on `val` (see full_finetune.py).

        Starts from the trial's brief checkpoint with the trial's learning rate, alpha,
        temperature and the search's optimizer unless given; resumes an interrupted run with
        the same settings (`restart=True` begins again). The result is stored with the study
        beside the brief checkpoint, which stays: `load`, `export`, `best` and the report use
        it from then on, here or in another process. A result from `search()` uses the
        search's `train` / `val`; one from `from_storage` needs them, and `base_model=` (the
        trained original, the teacher). A study searched with `evaluate=` scores with it, and
        trains with its `train_step=` / `distill=`: from `search()` they are known, from
        `from_storage` pass them again. Returns the fine-tuned model.
        """
        from ..runtime.model_io import resolve_device
        from .full_finetune import FinetuneSettings, check_settings, finetune_pick

        number = trial.trial if isinstance(trial, Candidate) else int(trial)
        frozen = self._finished_trial(number)
        if (TrialRecord.of(frozen).config or {}).get("precision") == "int8":
            raise InvalidInputError(f"trial {number} is int8: fine-tuning it fully would have to "
                                    "quantize it again, which finetune() does not do yet")
        searched = self.data or (None, None)
        train = train if train is not None else searched[0]
        val = val if val is not None else searched[1]
        task = self.task
        if evaluate is not None:
            task = user_task(evaluate, self.metric["direction"], train_step, distill,
                             self.metric["name"])
        own_evaluation = task is not None and not task.top1
        if not own_evaluation and self.metric != ACCURACY:
            raise InvalidInputError(f"this study ranks models by its own {self.metric['name']}: "
                                    "pass evaluate= (and train_step= or distill=, as searched)")
        if train is None or (val is None and not own_evaluation):
            raise InvalidInputError("finetune() needs train= and val= (a result loaded from "
                                    "storage does not know the search's data)")
        if self.teacher is None:
            raise InvalidInputError("finetune() distils from the trained original model: pass "
                                    "it as base_model= to SearchResult.from_storage")
        config = TrialRecord.of(frozen).config
        settings = FinetuneSettings(
            epochs=epochs, lr=lr if lr is not None else config["lr"],
            alpha=alpha if alpha is not None else config["distillation"]["alpha"],
            temperature=(temperature if temperature is not None
                         else config["distillation"]["temperature"]),
            optimizer=optimizer or (StudyRecord.of(self.study).settings or {}).get(
                "finetune_optimizer", "adamw"))
        check_settings(settings)
        self._require_base_model()
        brief_directory = self.checkpoint_path(number, brief=True)
        student = load_checkpoint(brief_directory, self.base_model)
        started = time.perf_counter()
        device = resolve_device(device)
        if not own_evaluation:
            task = classification_task(val, device, self.metric_fn, self.loss)
        progress = finetune_pick(student, self.teacher, train, task, settings,
                                 self.cache_dir.parent / "finetune" / f"trial-{number:05d}",
                                 device, restart=restart)
        store_finetuned(self.study, number, student, self.base_model, brief_directory,
                        self.artifact_store, progress, time.perf_counter() - started)
        self._refresh()
        return student.eval()

    def _finished_trial(self, number: int) -> FrozenTrial:
        trial = self._trial(number)
        if not TrialRecord.of(trial).checkpoint_artifacts:
            raise InvalidInputError(f"trial {number} has no checkpoint to fine-tune (not "
                                    "finished, not fine-tuned, or it fell off the front)")
        return trial

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report of this study to `path` (default: next to the checkpoints)."""
        from .report import write_report

        path = Path(path) if path else self.cache_dir.parent / "report.html"
        return write_report(self.study, path, self.storage)

    def __repr__(self) -> str:
        return (f"SearchResult(study={self.study.study_name!r}, trials={len(self.study.trials)}, "
                f"front={len(self.pareto)})")

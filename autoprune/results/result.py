"""What a search returns: the Pareto front as plain records, and access to its models."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch.nn as nn
from optuna.trial import FrozenTrial

from ..errors import CheckpointError, NoCandidateError
from ..store.artifacts import local_checkpoint
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

    def __str__(self) -> str:
        return (f"trial {self.trial:>4}: accuracy {self.accuracy:7.2%}  latency {self.latency_ms:7.2f} ms "
                f"({self.speedup:4.2f}x)  memory {self.memory_mb:6.1f} MiB  params "
                f"{self.params / 1e6:6.2f} M  MACs {self.macs / 1e6:7.1f} M  {self.config['criterion']}")


def candidate_from_trial(trial: FrozenTrial, baseline_latency_ms: float,
                         final_latency_ms: dict | None = None) -> Candidate:
    """A `Candidate`; latency comes from the interleaved final re-measurement when there is one."""
    record = TrialRecord.of(trial)
    figures = record.measurement
    final = (final_latency_ms or {})
    latency = final.get(str(trial.number), figures["latency_ms"])
    baseline = final.get("baseline", baseline_latency_ms)
    return Candidate(trial=trial.number, accuracy=trial.values[0], latency_ms=latency,
                     speedup=baseline / latency, memory_mb=figures["memory_mb"],
                     params=figures["params"], macs=figures["macs"], config=record.config)


class SearchResult:
    """A finished (or stopped) search: its front, its unpruned reference, and its models."""

    def __init__(self, study: optuna.Study, base_model: nn.Module | None, artifact_store,
                 cache_dir: Path, report_path: Path | None = None, storage: str | None = None):
        self.study = study
        self.storage = storage  # the URL as shown: password masked (see storage.py)
        self.base_model = base_model
        self.artifact_store = artifact_store
        self.cache_dir = Path(cache_dir)  # where checkpoints are downloaded to on this machine
        self.report_path = report_path
        record = StudyRecord.of(study)
        self.baseline = record.baseline
        final = record.final_latency_ms
        self.pareto: list[Candidate] = sorted(
            (candidate_from_trial(t, self.baseline["latency_ms"], final) for t in front_trials(study)),
            key=lambda c: c.latency_ms)

    @classmethod
    def from_storage(cls, study_name: str, storage: str, base_model: nn.Module | None = None,
                     artifacts=None, cache_dir: str | Path | None = None) -> "SearchResult":
        """Reopen a study (finished or still running) from its storage.

        Without `base_model`, a timm model is rebuilt from the architecture recorded in the
        study; any other model must be given to load or export trials. `artifacts` defaults to
        the artifact directory the search used.
        """
        from ..integrations.models import rebuild_base_model
        from ..store.storage import open_artifact_store, storage_url

        study = optuna.load_study(study_name=study_name, storage=storage)
        settings = StudyRecord.of(study).settings or {}
        if base_model is None:
            base_model = rebuild_base_model(settings.get("model_source"))
        store = open_artifact_store(artifacts or settings["artifacts"])
        cache = Path(cache_dir) if cache_dir else Path("reports") / study_name / "trials"
        return cls(study, base_model, store, cache, storage=storage_url(storage))

    def best(self, max_latency_ms: float | None = None, max_memory_mb: float | None = None,
             min_accuracy: float | None = None, max_params: int | None = None) -> Candidate:
        """The most accurate front member within the given limits."""
        limits = {"latency_ms": max_latency_ms, "memory_mb": max_memory_mb, "params": max_params}

        def fits(c: Candidate) -> bool:
            return (all(limit is None or getattr(c, key) <= limit for key, limit in limits.items())
                    and (min_accuracy is None or c.accuracy >= min_accuracy))

        fitting = [c for c in self.pareto if fits(c)]
        if not fitting:
            asked = ", ".join(f"{k} <= {v}" for k, v in limits.items() if v is not None)
            if min_accuracy is not None:
                asked += (", " if asked else "") + f"accuracy >= {min_accuracy}"
            closest = "; ".join(f"trial {c.trial}: {c.accuracy:.2%} at {c.latency_ms:.2f} ms, "
                                f"{c.memory_mb:.1f} MiB" for c in self.pareto[:5])
            raise NoCandidateError(f"no model on the front meets {asked or 'the limits'}; "
                                   f"the front has {closest or 'no model yet'}")
        return max(fitting, key=lambda c: (c.accuracy, -c.latency_ms))

    def export(self, trial: int | Candidate, path: str | Path, format: str = "safetensors") -> Path:
        """Write `trial`'s model to `path` as safetensors+JSON, ONNX or TorchScript, verified."""
        from .export import export_checkpoint

        number = trial.trial if isinstance(trial, Candidate) else int(trial)
        self._require_base_model()
        return export_checkpoint(self.checkpoint_path(number), self.base_model, path, format)

    def _require_base_model(self) -> None:
        if self.base_model is None:
            raise CheckpointError("this study's model is not a timm model autoprune can rebuild: "
                                  "pass base_model= (the model you searched) to load or export")

    def checkpoint_path(self, trial: int) -> Path:
        """The local directory of `trial`'s checkpoint, fetched from the artifact store."""
        trials = self.study.get_trials(deepcopy=False)
        return local_checkpoint(trials[trial], self.artifact_store, self.cache_dir)

    def load(self, trial: int | Candidate) -> nn.Module:
        """The pruned, fine-tuned model of `trial`, rebuilt from the base model, in eval mode."""
        number = trial.trial if isinstance(trial, Candidate) else int(trial)
        self._require_base_model()
        return load_checkpoint(self.checkpoint_path(number), self.base_model)

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report of this study to `path` (default: next to the checkpoints)."""
        from .report import write_report

        path = Path(path) if path else self.cache_dir.parent / "report.html"
        return write_report(self.study, path, self.storage)

    def __repr__(self) -> str:
        return (f"SearchResult(study={self.study.study_name!r}, trials={len(self.study.trials)}, "
                f"front={len(self.pareto)})")

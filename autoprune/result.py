"""What a search returns: the Pareto front as plain records, and access to its models."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch.nn as nn
from optuna.trial import FrozenTrial, TrialState

from .checkpoint import load_checkpoint


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


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed, feasible trials no other such trial beats on every objective."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if is_feasible(t)]

    def dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
        (acc_a, lat_a, mem_a), (acc_b, lat_b, mem_b) = a.values, b.values
        no_worse = acc_a >= acc_b and lat_a <= lat_b and mem_a <= mem_b
        return no_worse and (acc_a > acc_b or lat_a < lat_b or mem_a < mem_b)

    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]


def candidate_from_trial(trial: FrozenTrial, baseline_latency_ms: float,
                         final_latency_ms: dict | None = None) -> Candidate:
    """A `Candidate`; latency comes from the interleaved final re-measurement when there is one."""
    figures = trial.user_attrs["measurement"]
    final = (final_latency_ms or {})
    latency = final.get(str(trial.number), figures["latency_ms"])
    baseline = final.get("baseline", baseline_latency_ms)
    return Candidate(trial=trial.number, accuracy=trial.values[0], latency_ms=latency,
                     speedup=baseline / latency, memory_mb=figures["memory_mb"],
                     params=figures["params"], macs=figures["macs"],
                     config=trial.user_attrs["config"])


class SearchResult:
    """A finished (or stopped) search: its front, its unpruned reference, and its models."""

    def __init__(self, study: optuna.Study, base_model: nn.Module, checkpoint_dir: Path,
                 report_path: Path | None = None):
        self.study = study
        self.base_model = base_model
        self.checkpoint_dir = Path(checkpoint_dir)
        self.report_path = report_path
        attrs = study.user_attrs
        self.baseline = attrs["baseline"]
        final = attrs.get("final_latency_ms")
        self.pareto: list[Candidate] = sorted(
            (candidate_from_trial(t, self.baseline["latency_ms"], final) for t in front_trials(study)),
            key=lambda c: c.latency_ms)

    def checkpoint_path(self, trial: int) -> Path:
        return self.checkpoint_dir / f"trial-{trial:05d}"

    def load(self, trial: int | Candidate) -> nn.Module:
        """The pruned, fine-tuned model of `trial`, rebuilt from the base model, in eval mode."""
        number = trial.trial if isinstance(trial, Candidate) else int(trial)
        return load_checkpoint(self.checkpoint_path(number), self.base_model)

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report of this study to `path` (default: next to the checkpoints)."""
        from .report import write_report

        path = Path(path) if path else self.checkpoint_dir.parent / "report.html"
        return write_report(self.study, path)

    def __repr__(self) -> str:
        return (f"SearchResult(study={self.study.study_name!r}, trials={len(self.study.trials)}, "
                f"front={len(self.pareto)})")

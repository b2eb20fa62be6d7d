"""What a study records, in one place: the objectives, and typed views of the attributes
autoprune keeps on an Optuna study and on each of its trials.

Optuna stores a study's and a trial's facts as JSON user attributes, keyed by strings. Every
part of autoprune that writes or reads them (the trial, `search()`, early stopping, the
callbacks, the report, the result, the benchmark) goes through this module, so a key is
spelled once and its meaning is written down once. Readers tolerate missing keys (None or an
empty record), so studies written by earlier versions keep loading.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import optuna
from optuna.trial import FrozenTrial

# The study's objectives, in order, with their directions: what Optuna optimises and what
# dashboards and plots call them.
OBJECTIVES = (("accuracy", "maximize"), ("latency_ms", "minimize"), ("memory_mb", "minimize"))
OBJECTIVE_NAMES = tuple(name for name, _ in OBJECTIVES)
DIRECTIONS = tuple(direction for _, direction in OBJECTIVES)
TRIAL_STEPS = ("sample", "prune", "measure", "finetune", "evaluate", "save")  # seconds_<step>


def objective_values(accuracy: float, measurement: Any) -> tuple[float, float, float]:
    """A trial's objectives, in `OBJECTIVES` order, from its metric and its `Measurement`."""
    return accuracy, measurement.latency_ms, measurement.memory_mb


@dataclass(frozen=True)
class TrialRecord:
    """One trial's recorded facts (None where the trial got no such fact)."""

    config: dict | None = None            # the configuration it tried (config.TrialConfig)
    kept_channels: dict | None = None     # output channels per Conv/Linear after pruning
    measurement: dict | None = None       # runtime.measure.Measurement of the pruned model
    speedup: float | None = None          # unpruned latency / this latency (the estimate)
    paired_latency: dict | None = None    # runtime.measure.PairedLatency: the reading itself
    predicted_latency_ms: float | None = None  # the study's latency model, before pruning
    latency_source: str | None = None     # "paired" (timed) or "predicted..." (why not timed)
    rejected_before_pruning: str | None = None  # a limit the prediction already broke
    mac_reduction: float | None = None
    reference: str | None = None          # "uniform 0.4", "warm start: ..." for enqueued trials
    retry_of: int | None = None           # the trial a Ctrl-C cut short, run again
    continues: int | None = None          # the front member it fine-tunes further (promotion)
    promoted_steps: int | None = None     # the steps that promotion was given
    quantizes: int | None = None          # the fp32 trial whose weights it runs in int8 (twin)
    finetuned_steps: int | None = None    # steps of fine-tuning its weights had, in all
    skipped_finetune: str | None = None   # why it was not fine-tuned (a hard limit broken)
    screen_accuracy: float | None = None  # metric part-way through fine-tuning (early_stop)
    screen_step: int | None = None
    stopped_early: str | None = None      # why its fine-tuning stopped there
    train_loss: float | None = None
    fp32_accuracy: float | None = None    # an int8 trial's metric before quantization
    checkpoint_artifacts: dict | None = None  # file name -> artifact id in the store
    checkpoint_sha256: dict | None = None  # file name -> SHA-256 of what was uploaded
    failure: str | None = None            # why it failed
    surplus: str | None = None            # why it did not run (the study's total was reached)
    seconds: dict | None = None           # step -> seconds, for TRIAL_STEPS

    @classmethod
    def of(cls, trial: FrozenTrial | optuna.Trial) -> "TrialRecord":
        attrs = trial.user_attrs
        seconds = {step: attrs[f"seconds_{step}"] for step in TRIAL_STEPS
                   if f"seconds_{step}" in attrs}
        return cls(**{f.name: attrs.get(f.name) for f in fields(cls) if f.name != "seconds"},
                   seconds=seconds)

    @property
    def latency_ms(self) -> float | None:
        return (self.measurement or {}).get("latency_ms")

    @property
    def measured_speedup(self) -> float | None:
        """The paired reading's speedup; `speedup` is that reading combined with the latency
        model's prediction (study/latency.estimated_speedup). The same in older studies."""
        return (self.paired_latency or {}).get("speedup") or self.speedup

    @property
    def measured_latency_ms(self) -> float | None:
        """`latency_ms` at the paired reading's speedup instead of the estimate's."""
        if self.latency_ms is None or not self.speedup or not self.measured_speedup:
            return self.latency_ms
        return self.latency_ms * self.speedup / self.measured_speedup


_TRIAL_KEYS = {f.name for f in fields(TrialRecord)} - {"seconds"}


def timed_against_predicted(trials: list[FrozenTrial]) -> list[tuple[int, float, float]]:
    """(trial number, predicted latency, latency read in the trial) of every completed trial
    that was timed for real (a trial left untimed carries its prediction as its latency), each
    reading once: a promotion of a timed member carries the member's reading and is left out."""
    pairs = []
    for trial in trials:
        record = TrialRecord.of(trial)
        if (trial.state == optuna.trial.TrialState.COMPLETE and own_reading(record, trials)
                and record.predicted_latency_ms is not None and record.latency_ms is not None
                and (record.config or {}).get("precision") != "int8"):  # the model predicts fp32
            pairs.append((trial.number, record.predicted_latency_ms, record.measured_latency_ms))
    return pairs


def own_reading(record: TrialRecord, trials: list[FrozenTrial]) -> bool:
    """Whether the trial was timed paired itself: not left at its prediction, and not a
    promotion carrying its timed member's reading (`trials`: the study's, trials[n] is trial n)."""
    if record.latency_source != "paired":
        return False
    if record.continues is None or record.continues >= len(trials):
        return True
    return TrialRecord.of(trials[record.continues]).latency_source != "paired"


def record_trial(trial: optuna.Trial, **facts: Any) -> None:
    """Record facts on a running trial; each keyword must be a `TrialRecord` field."""
    for key, value in facts.items():
        if key not in _TRIAL_KEYS:
            raise KeyError(f"{key!r} is not a field of TrialRecord")
        trial.set_user_attr(key, value)


def record_seconds(trial: optuna.Trial, step: str, seconds: float) -> None:
    """Record how long one step of the trial took (`TRIAL_STEPS`)."""
    if step not in TRIAL_STEPS:
        raise KeyError(f"{step!r} is not one of {TRIAL_STEPS}")
    trial.set_user_attr(f"seconds_{step}", seconds)


def trial_facts(**facts: Any) -> dict[str, Any]:
    """User attributes for `study.enqueue_trial` (a reference, a retry), checked like
    `record_trial`."""
    unknown = set(facts) - _TRIAL_KEYS
    if unknown:
        raise KeyError(f"{sorted(unknown)} are not fields of TrialRecord")
    return facts


@dataclass(frozen=True)
class StudyRecord:
    """What a study records once, for every worker and every later reader."""

    uid: str | None = None               # unique per study, across storages (a UUID)
    identity: dict | None = None         # what must match for a process to join (see runner)
    baseline: dict | None = None         # the unpruned model: accuracy and measurement
    base_channels: dict | None = None    # output channels per Conv/Linear of the unpruned model
    settings: dict | None = None         # what the run was asked to do (shown in the report)
    finetune_steps: int | None = None    # steps per trial, decided by the first process
    final_latency_ms: dict | None = None  # interleaved re-timing: "baseline" and trial numbers
    latency_model: dict | None = None    # runtime.latency_model.LatencyModel, as data
    finished: str | None = None          # ISO time the search ended
    finetuned: dict | None = None        # trial number -> its full fine-tune (store_finetuned)

    @classmethod
    def of(cls, study: optuna.Study) -> "StudyRecord":
        attrs = study.user_attrs
        return cls(**{f.name: attrs.get(f.name) for f in fields(cls)})

    def final_latency_of(self, key: int | str) -> float | None:
        """The interleaved re-timing of a front trial (or "baseline"), when there is one."""
        return (self.final_latency_ms or {}).get(str(key))


_STUDY_KEYS = {f.name for f in fields(StudyRecord)}


def record_study(study: optuna.Study, **facts: Any) -> None:
    """Record facts on the study; each keyword must be a `StudyRecord` field."""
    for key, value in facts.items():
        if key not in _STUDY_KEYS:
            raise KeyError(f"{key!r} is not a field of StudyRecord")
        study.set_user_attr(key, value)

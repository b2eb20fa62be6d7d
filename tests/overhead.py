"""Where a study's trial time went: autoprune's own share against fine-tuning and evaluation.

    python tests/overhead.py reports/<study>/study.db [study name]

Per completed trial, the recorded steps (sample, prune, measure, save; fine-tune, evaluate)
and the rest of its wall time (storage writes, Optuna's bookkeeping); the after-trial
callbacks run between trials, so the gaps between one trial's end and the next one's start
are shown too. Prints medians and the overhead share of the summed wall time.
"""

from __future__ import annotations

import statistics
import sys

import optuna
from optuna.trial import TrialState

sys.path.insert(0, ".")
from autoprune.store.records import TRIAL_STEPS, StudyRecord, TrialRecord  # noqa: E402


def main(path: str, name: str | None = None) -> None:
    storage = f"sqlite:///{path}"
    name = name or optuna.get_all_study_names(storage)[0]
    study = optuna.load_study(study_name=name, storage=storage)
    trials = sorted((t for t in study.trials if t.state == TrialState.COMPLETE
                     and not t.user_attrs.get("surplus")), key=lambda t: t.datetime_start)
    rows = []
    for trial in trials:
        seconds = TrialRecord.of(trial).seconds
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        rows.append({**{step: seconds.get(step, 0.0) for step in TRIAL_STEPS}, "wall": wall,
                     "rest": wall - sum(seconds.values())})
    gaps = [(b.datetime_start - a.datetime_complete).total_seconds()
            for a, b in zip(trials, trials[1:])]
    total = sum(r["wall"] for r in rows) + sum(gaps)
    work = sum(r["finetune"] + r["evaluate"] for r in rows)
    print(f"study {name}: {len(rows)} completed trials, {total:.1f} s of trials and gaps")
    for key in (*TRIAL_STEPS, "rest", "wall"):
        values = [r[key] for r in rows]
        print(f"  {key:<9} median {statistics.median(values):7.3f} s   total {sum(values):8.2f} s"
              f"   {100 * sum(values) / total:5.1f} %")
    if gaps:
        print(f"  {'between':<9} median {statistics.median(gaps):7.3f} s   total {sum(gaps):8.2f} s"
              f"   {100 * sum(gaps) / total:5.1f} %  (callbacks, next trial's set-up)")
    print(f"overhead share (neither fine-tuning nor evaluation): {100 * (1 - work / total):.1f} %")
    model = StudyRecord.of(study).latency_model
    if model:
        print(f"latency model built once in {model['build_seconds']:.1f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])

"""The latency model's predictions with and without the drift factor, replayed on the
trials of finished benchmark searches (no model is timed again).

For every search study under the given benchmark folders, the trials timed for real (paired
with the unpruned model; promotions and int8 trials left out) are taken in the order they
finished. Each one's measured relative latency (1 / speedup) is compared with
- the stored latency model's prediction, as calibrated once before trial 1;
- that prediction times a drift factor: the median of measured / predicted over the last 5
  trials timed before it (tried as a correction for a machine whose speedups move; not
  shipped, see README.md here).

    python reports/benchmarks/prediction-drift-replay/run.py reports/benchmarks/resnet18-digits-hard-cpu-derived-starts ...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import optuna

from autoprune.runtime.latency_model import LatencyModel

HERE = Path(__file__).parent
DRIFT_TRIALS = 5  # the last timed trials whose readings set the factor


def replay(study: optuna.Study) -> list[tuple[float, float, float]]:
    """(measured, calibrated prediction, drift-scaled prediction) per timed trial, in order."""
    model = LatencyModel.from_dict(study.user_attrs["latency_model"])
    finished = sorted((t for t in study.trials if t.datetime_complete is not None),
                      key=lambda t: t.datetime_complete)
    rows, ratios = [], []
    for trial in finished:
        facts = trial.user_attrs
        if (facts.get("latency_source") != "paired" or facts.get("continues") is not None
                or facts.get("quantizes") is not None or not facts.get("speedup")
                or facts["config"].get("precision", "fp32") == "int8"):
            continue
        measured = 1.0 / facts["speedup"]
        predicted = model.relative(facts["config"]["sparsity"])
        drift = statistics.median(ratios[-DRIFT_TRIALS:]) if ratios else 1.0
        rows.append((measured, predicted, predicted * drift))
        ratios.append(measured / predicted)
    return rows


def shares(errors: list[float]) -> dict:
    return {"within_10pct": sum(e <= 0.10 for e in errors) / len(errors),
            "median_abs_error": statistics.median(errors), "count": len(errors)}


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_study, calibrated, scaled = {}, [], []
    for folder in sys.argv[1:]:
        for path in sorted(Path(folder).glob("seed-*/*/study.db")):
            storage = f"sqlite:///{path}"
            name = optuna.get_all_study_summaries(storage)[0].study_name
            study = optuna.load_study(study_name=name, storage=storage)
            if "latency_model" not in study.user_attrs:
                continue
            rows = replay(study)
            if not rows:
                continue
            errors = ([abs(p - m) / m for m, p, _ in rows], [abs(s - m) / m for m, _, s in rows])
            calibrated += errors[0]
            scaled += errors[1]
            key = str(path.parent.relative_to(Path(folder).parent))
            per_study[key] = {"calibrated": shares(errors[0]), "with_drift": shares(errors[1])}
            print(f"{key:70s} {len(rows):3d} timed: within 10 % "
                  f"{per_study[key]['calibrated']['within_10pct']:.0%} -> "
                  f"{per_study[key]['with_drift']['within_10pct']:.0%}")
    results = {"folders": sys.argv[1:], "drift_trials": DRIFT_TRIALS,
               "all": {"calibrated": shares(calibrated), "with_drift": shares(scaled)},
               "studies": per_study}
    (HERE / "results.json").write_text(json.dumps(results, indent=1))
    for label, figures in results["all"].items():
        print(f"{label:10s}: {figures['within_10pct']:.1%} within +-10 %, median error "
              f"{figures['median_abs_error']:.2%} over {figures['count']} timed trials")


if __name__ == "__main__":
    main()

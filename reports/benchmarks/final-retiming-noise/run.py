"""How much one latency reading moves, and what that does to issue #12's agreement figure.

Four pruned timm resnet18 models (untrained: weights do not change latency) at the digits
demo's input, 32 x 3 x 32 x 32, on the CPU target. Each repeat reads every model's speedup
over the unpruned model
- as a trial does (paired, 7 rounds and more until settled, up to 15), and two cheaper
  variants of it (5 rounds; 5 rounds with one warm-up call instead of two), timing each;
- as the final re-timing of the front does, all models and the reference interleaved:
  5 rounds of 0.15 s blocks (the setting before) and 15 rounds of 0.05 s (the same time).
It prints, per setting, the spread of the readings of one model (coefficient of variation
over repeats) and the share of (trial reading, final reading) pairs within 10 % of each other.

    python reports/benchmarks/final-retiming-noise/run.py --repeats 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import timm
import torch

from autoprune.runtime.measure import _ratios, interleaved_against_reference, speedup_settled
from autoprune.study.options import SearchOptions
from autoprune.study.prepared import PreparedModel
from autoprune.study.space import load_search_space
from autoprune.targets.base import get_target

HERE = Path(__file__).parent
SHAPES = {"uniform 0.3": (0.3, 0.3), "inner 0.75": (0.0, 0.75), "uniform 0.7": (0.7, 0.7),
          "stream 0.5, inner 0.9": (0.5, 0.9)}  # (stream, inner) ratios
TRIAL = {"7 rounds, 2 warm-up (a trial today)": (7, 2), "5 rounds, 1 warm-up": (5, 1),
         "5 rounds, 2 warm-up": (5, 2)}
FINAL = {"5 x 0.15 s (before)": (5, 0.15), "15 x 0.05 s (now)": (15, 0.05)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    inputs = torch.randn(32, 3, 32, 32)
    space = load_search_space(str(HERE.parents[2] / "search_spaces" / "resnet.yaml"))
    prepared = PreparedModel.build(timm.create_model("resnet18", num_classes=10), inputs, space)
    kinds = {d.name: d.kind for d in prepared.dimensions}
    models = {label: prepared.prune({name: stream if kind == "stream" else inner
                                     for name, kind in kinds.items()}).model.eval()
              for label, (stream, inner) in SHAPES.items()}
    target = get_target("cpu", "cpu", args.threads)
    block = SearchOptions().block_seconds

    def paired(model, rounds, warmup):
        started = time.perf_counter()
        samples = target.time_interleaved(
            {"model": target.runnable(model, inputs),
             "reference": target.runnable(prepared.model, inputs)},
            rounds, block, warmup=warmup, settled=lambda s: speedup_settled(s, 0.03),
            max_rounds=SearchOptions().latency_max_rounds)
        return statistics.median(_ratios(samples)), time.perf_counter() - started

    trial = {s: {m: [] for m in models} for s in TRIAL}
    trial_seconds = {s: [] for s in TRIAL}
    final = {s: {m: [] for m in models} for s in FINAL}
    for repeat in range(args.repeats):
        for label, model in models.items():
            for setting, (rounds, warmup) in TRIAL.items():
                speedup, seconds = paired(model, rounds, warmup)
                trial[setting][label].append(speedup)
                trial_seconds[setting].append(seconds)
        for setting, (rounds, block_seconds) in FINAL.items():
            latencies = interleaved_against_reference(models, prepared.model, inputs, target,
                                                      rounds=rounds, block_seconds=block_seconds)
            for label in models:
                final[setting][label].append(latencies["reference"] / latencies[label])
        print(f"repeat {repeat + 1} of {args.repeats} done", flush=True)

    def spread(readings):  # coefficient of variation per model, in %
        return {m: round(100 * statistics.pstdev(v) / statistics.mean(v), 1)
                for m, v in readings.items()}

    def agreement(trial_readings, final_readings):
        pairs = [abs(a - b) / b <= 0.10 for m in models
                 for a in trial_readings[m] for b in final_readings[m]]
        return round(100 * sum(pairs) / len(pairs), 1)

    results = {
        "repeats": args.repeats, "threads": args.threads,
        "trial": {s: {"speedups": trial[s], "spread_pct": spread(trial[s]),
                      "seconds_mean": statistics.mean(trial_seconds[s])} for s in TRIAL},
        "final": {s: {"speedups": final[s], "spread_pct": spread(final[s])} for s in FINAL},
        "within_10pct": {t: {f: agreement(trial[t], final[f]) for f in FINAL} for t in TRIAL},
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=1))
    for s in TRIAL:
        print(f"trial  {s:38s} {statistics.mean(trial_seconds[s]):.3f} s per reading, "
              f"spread % {spread(trial[s])}")
    for s in FINAL:
        print(f"final  {s:38s} spread % {spread(final[s])}")
    for t in TRIAL:
        for f in FINAL:
            print(f"within 10 %: trial {t} vs final {f}: {results['within_10pct'][t][f]} %")


if __name__ == "__main__":
    main()

"""How reproducible is one trial's latency reading? The ceiling on issue #12's (a) and (b).

For each model: the search's latency model is built as `search()` builds it (8 calibration
readings, the trial's timing settings), 10 configurations are drawn from the search space
(another seed) and pruned once, then each copy is read `--passes` times with exactly the
trial's paired timing (7-15 rounds, 0.3 s of timed runs), round-robin over the copies, so a
copy's readings lie seconds to a minute apart. Untrained timm models (latency does not depend
on the weights), input 32 x 3 x 32 x 32, 2 threads.

Printed per model: how often two readings of the same copy agree within 10 % (what (a)
compares: a trial's reading against a later one), how often a reading lies within 10 % of
its copy's median reading, and how often the latency model's prediction lies within 10 % of
a single reading (what (b) scores) and of the copy's median reading.

python reports/benchmarks/reading-reproducibility/run.py resnet18,mobilenetv3_small_100,deit_tiny_patch16_224 [cuda]
(writes results.json in the current directory; a second argument names another target)
"""
import itertools
import json
import statistics
import sys

import optuna
import timm
import torch

from autoprune.console import quiet_optuna
from autoprune.runtime.measure import paired_latency
from autoprune.study.latency import calibration_sparsities, study_latency_model
from autoprune.study.options import SearchOptions
from autoprune.study.prepared import PreparedModel
from autoprune.study.space import resolve_search_space
from autoprune.targets import get_target


def share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


def within(a: float, b: float, tolerance: float = 0.10) -> bool:
    return abs(a - b) / b <= tolerance


def main(names: list[str], target_name: str = "cpu", configurations: int = 10,
         passes: int = 6) -> None:
    options = SearchOptions()
    target = get_target(target_name, "cuda" if target_name == "cuda" else "cpu", threads=2)
    timing = (options.latency_rounds, options.block_seconds, options.latency_max_rounds)
    results = {}
    for name in names:
        with quiet_optuna():
            torch.manual_seed(0)
            extra = {"img_size": 32} if "deit" in name else {}
            model = timm.create_model(name, pretrained=False, num_classes=10, **extra).eval()
            prepared = PreparedModel.build(model, torch.randn(32, 3, 32, 32),
                                           resolve_search_space(model, None), device=target.device)
            latency_model = study_latency_model(
                optuna.create_study(), prepared, target, options.calibration_points, *timing[:2],
                seed=0, table_block_seconds=options.table_block_seconds, max_rounds=timing[2])
            uniform = len(prepared.space.uniform_ratios)
            drawn = calibration_sparsities(prepared, configurations + uniform, seed=1000)[uniform:]
            copies = [prepared.prune(sparsity).model.eval() for sparsity in drawn]
            readings = [[] for _ in copies]
            for _ in range(passes):
                for index, copy in enumerate(copies):
                    paired = paired_latency(copy, prepared.model, prepared.example_inputs,
                                            target, *timing)
                    readings[index].append(paired.speedup)
        predicted = [1 / latency_model.relative(sparsity) for sparsity in drawn]
        medians = [statistics.median(r) for r in readings]
        figures = {
            "pairs_within_10": share(within(a, b) for r in readings
                                     for a, b in itertools.combinations(r, 2)),
            "reading_within_10_of_median": share(within(a, m) for r, m in zip(readings, medians)
                                                 for a in r),
            "prediction_within_10_of_reading": share(within(p, a) for r, p in zip(readings, predicted)
                                                     for a in r),
            "prediction_within_10_of_median": share(within(p, m) for p, m in zip(predicted, medians)),
            "spread_of_copy_percent": [round(100 * (max(r) - min(r)) / statistics.median(r), 1)
                                       for r in readings],
        }
        results[name] = {**figures, "predicted_speedup": [round(p, 3) for p in predicted],
                         "readings": [[round(a, 3) for a in r] for r in readings],
                         "sparsities": drawn}
        print(f"{name}: readings {medians[0]:.2f}x.. ; " + ", ".join(
            f"{key} {value:.0%}" for key, value in figures.items() if not isinstance(value, list))
            + f"; max-min per copy {min(figures['spread_of_copy_percent'])}-"
              f"{max(figures['spread_of_copy_percent'])} % of its median", flush=True)
    with open("results.json", "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1].split(","), *sys.argv[2:3])

"""The `cuda` target on a real GPU (run on a lent GPU machine; CI has none).

1. Uniform pruning's paired speedups timed eagerly and replayed as CUDA graphs, beside the
   MAC reduction: the reason the target captures graphs is that a small model on a GPU is
   bound by kernel launches, so eager timing should show little of the pruning.
2. The latency model built and scored on the GPU (bench.latency_check, as on the CPU).
Writes results to the path given as the first argument (JSON).

    python reports/benchmarks/cuda-check/run.py OUT.json
"""

from __future__ import annotations

import json
import sys
import time

import timm
import torch

from autoprune.bench.latency_check import check_latency_model
from autoprune.runtime.measure import count_macs_and_params, paired_latency
from autoprune.study.latency import calibration_sparsities
from autoprune.study.prepared import PreparedModel
from autoprune.study.space import resolve_search_space
from autoprune.targets import get_target


def uniform_speedups(model_name: str, batch: int, size: int = 32, device: str = "cuda"
                     ) -> list[dict]:
    torch.manual_seed(0)
    extra = {"img_size": size} if "deit" in model_name else {}
    model = timm.create_model(model_name, pretrained=False, num_classes=10, **extra).eval()
    prepared = PreparedModel.build(model, torch.randn(batch, 3, size, size),
                                   resolve_search_space(model, None), device=device)
    graphs = get_target(None, device)
    eager = get_target(None, device)
    eager.use_graphs = False
    macs, _ = count_macs_and_params(prepared.model, prepared.example_inputs)
    ratios = prepared.space.uniform_ratios
    rows = []
    for ratio, sparsity in zip(ratios, calibration_sparsities(prepared, len(ratios))):
        pruned = prepared.prune(sparsity).model
        pruned_macs, _ = count_macs_and_params(pruned, prepared.example_inputs)
        row = {"model": model_name, "batch": batch, "ratio": ratio,
               "mac_reduction": macs / pruned_macs}
        for name, target in (("eager", eager), ("graph", graphs)):
            paired = paired_latency(pruned, prepared.model, prepared.example_inputs, target,
                                    rounds=9, block_seconds=0.05)
            row[f"{name}_speedup"] = paired.speedup
            row[f"{name}_reference_ms"] = paired.reference_ms
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(out: str, device: str = "cuda", models=("resnet18", "mobilenetv3_small_100",
                                                 "deit_tiny_patch16_224"),
         batches=(32, 256), configurations: int = 30) -> None:
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(torch.__version__, name, timm.__version__, flush=True)
    results: dict = {"device": name, "torch": torch.__version__,
                     "uniform": [], "latency_model": []}
    for model_name in models:
        for batch in batches:
            results["uniform"] += uniform_speedups(model_name, batch, device=device)
            json.dump(results, open(out, "w"), indent=1)
    target = get_target(None, device)
    for model_name in models:
        started = time.perf_counter()
        figures = check_latency_model(model_name, target, configurations=configurations)
        figures["seconds"] = time.perf_counter() - started
        results["latency_model"].append(figures)
        print(model_name, {k: figures[k] for k in ("median_abs_error", "within_10pct",
                                                   "build_seconds", "seconds")}, flush=True)
        json.dump(results, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1])

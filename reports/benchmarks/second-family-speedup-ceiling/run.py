"""How much speed can width pruning buy each family on this CPU? Issue #13's bar asks for
picked models at 5x and 8x on two families; this times each model's uniform cuts of its
search space (the space's own `round_to`, ignored layers and dimensions), paired with the
unpruned model as a trial is (9-15 rounds of 0.03 s blocks). Untrained timm models (latency
does not depend on the weights), batch 32, 2 threads.

python reports/benchmarks/second-family-speedup-ceiling/run.py resnet18,mobilenetv3_small_100,deit_tiny_patch16_224,efficientnet_b0 32,96
(writes results.json in the current directory)
"""
import json
import sys

import timm
import torch

from autoprune.runtime.measure import count_macs_and_params, paired_latency
from autoprune.study.config import config_from_params, uniform_params
from autoprune.study.prepared import PreparedModel
from autoprune.study.space import resolve_search_space
from autoprune.targets import get_target

RATIOS = (0.3, 0.5, 0.7, 0.85, 0.9)


def main(names: list[str], sizes: list[int]) -> None:
    target = get_target("cpu", "cpu", threads=2)
    results = {}
    for size in sizes:
        for name in names:
            torch.manual_seed(0)
            extra = {"img_size": size} if "deit" in name else {}
            model = timm.create_model(name, pretrained=False, num_classes=10, **extra).eval()
            space = resolve_search_space(model, None)
            prepared = PreparedModel.build(model, torch.randn(32, 3, size, size), space)
            base_macs, _ = count_macs_and_params(prepared.model, prepared.example_inputs)
            row = {}
            for ratio in RATIOS:
                sparsity = config_from_params(uniform_params(space, prepared.dimensions, ratio),
                                              prepared.dimensions, space).sparsity
                pruned = prepared.prune(sparsity).model.eval()
                macs, _ = count_macs_and_params(pruned, prepared.example_inputs)
                paired = paired_latency(pruned, prepared.model, prepared.example_inputs, target,
                                        9, 0.03, 15)
                row[f"{ratio:g}"] = {"speedup": round(paired.speedup, 2),
                                     "mac_reduction": round(base_macs / macs, 1)}
            results[f"{name}@{size}"] = row
            print(f"{name} at {size}x{size}: " + ", ".join(
                f"{r} {v['speedup']}x ({v['mac_reduction']}x MACs)" for r, v in row.items()),
                flush=True)
    with open("results.json", "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1].split(","), [int(s) for s in sys.argv[2].split(",")])

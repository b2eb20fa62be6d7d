"""Models of other projects' zoos, tried as a new user would: a tiny search, then a front
member reloaded, or a refusal before trial 1. Prints one JSON line per model (what
tests/test_model_zoos.py reads), with the peak resident memory while that model was tried.

    python tests/zoo_check.py torchvision:resnet18 timm:dpn68 ...

Random weights, 10 classes, random images: the point is whether the model searches, reloads
exactly and stays within memory, not what it learns.
"""

from __future__ import annotations

import argparse
import json
import gc
import logging
import sys
import tempfile
import time

import torch


# Every classification family torchvision ships, by its smallest member, and the timm models
# an earlier run found failing, with the input side (pixels) each needs (32 where it runs).
# CI tries those the issue found failing and SqueezeNet, seconds each; `pytest -m extended`
# the rest (VGG-11 alone takes about 100 s and 6 GB here). Swin-T at 64x64, first in its
# process, is where the dependency analysis used to fill 24 GB.
CI_MODELS = {  # in two processes (tests/test_model_zoos.py): first half, then second
    "torchvision:swin_t": 64, "torchvision:mnasnet0_5": 32,
    "torchvision:shufflenet_v2_x0_5": 32, "timm:dpn68": 32, "torchvision:googlenet": 32,
    "timm:cspresnet50": 32, "timm:mixnet_s": 32, "torchvision:squeezenet1_0": 32,
}
EXTENDED_MODELS = {
    "torchvision:alexnet": 64, "torchvision:convnext_tiny": 32, "torchvision:densenet121": 32,
    "torchvision:efficientnet_b0": 32, "torchvision:efficientnet_v2_s": 32,
    "torchvision:inception_v3": 96, "torchvision:maxvit_t": 224, "torchvision:mobilenet_v2": 32,
    "torchvision:mobilenet_v3_small": 32, "torchvision:resnet18": 32,
    "torchvision:resnext50_32x4d": 32, "torchvision:vgg11": 32, "torchvision:vit_b_32": 64,
    "torchvision:wide_resnet50_2": 32, "torchvision:regnet_x_400mf": 32,
    "torchvision:regnet_y_400mf": 32, "torchvision:swin_v2_t": 32,
}
MODELS = {**CI_MODELS, **EXTENDED_MODELS}


def reset_peak_memory() -> None:
    """Linux: start the process's peak resident size (VmHWM) afresh, so it is one model's."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_memory_mb() -> float:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def build(spec: str) -> torch.nn.Module:
    source, name = spec.split(":", 1)
    if source == "torchvision":
        import torchvision
        extra = {"image_size": 64} if name.startswith("vit_") else {}
        if name == "inception_v3":  # its auxiliary head needs 299x299 inputs in training
            extra = {"aux_logits": False, "init_weights": False}
        return torchvision.models.get_model(name, weights=None, num_classes=10, **extra)
    import timm
    return timm.create_model(name, pretrained=False, num_classes=10)


def check(spec: str, size: int, output_dir: str) -> dict:
    import autoprune
    from autoprune.errors import InvalidInputError
    from autoprune.study.options import SearchOptions

    # little timing effort: whether it searches is the question here, not how fast it got
    options = SearchOptions(latency_run_time=0.02, latency_rounds=3, latency_max_rounds=3,
                            final_rounds=1, calibration_points=2, table_block_seconds=0.0005,
                            front_floor_share=None)

    torch.manual_seed(0)
    model = build(spec).eval()
    images = torch.randn(16, 3, size, size)
    labels = torch.randint(0, 10, (16,))
    data = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    kept: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: kept.append(record.getMessage())
    logging.getLogger("autoprune").addHandler(handler)
    started = time.monotonic()
    try:
        result = autoprune.search(model, trials=2, train=data, val=data, finetune_steps=1,
                                  threads=1, options=options,
                                  output_dir=output_dir, write_report=False, verbose=True)
    except InvalidInputError as err:
        return {"model": spec, "outcome": "refused", "seconds": time.monotonic() - started,
                "message": str(err)}
    finally:
        logging.getLogger("autoprune").removeHandler(handler)
    member = result.pareto[-1]
    loaded = result.load(member.trial).eval()
    with torch.no_grad():  # the reloaded model scores what its trial recorded, on the same data
        correct = sum(int((loaded(x).argmax(1) == y).sum()) for x, y in data)
    exact = abs(correct / len(labels) - member.accuracy) < 1e-9
    params = sum(p.numel() for p in loaded.parameters())
    kept_line = next((line for line in kept if line.startswith("kept unpruned")), "")
    return {"model": spec, "outcome": "searched", "seconds": time.monotonic() - started,
            "reloaded_exactly": exact and params == member.params,
            "speedup": max(c.speedup for c in result.pareto), "kept": kept_line}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    logging.getLogger("autoprune").setLevel(logging.INFO)
    for spec in args.models:
        gc.collect()
        reset_peak_memory()
        with tempfile.TemporaryDirectory() as output_dir:
            try:
                row = check(spec, MODELS.get(spec, 32), output_dir)
            except Exception as err:  # a raw exception is what the zoo test looks for
                row = {"model": spec, "outcome": "raw exception",
                       "message": f"{type(err).__name__}: {err}"[:500]}
        row["peak_rss_mb"] = peak_memory_mb()
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())

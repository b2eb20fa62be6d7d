"""How well the latency model predicts: configurations drawn from the search space, each
pruned and timed paired against the unpruned model, compared with the prediction.

The configurations are drawn with another seed than the calibration points, so the figures
are out of sample. Weights do not change latency, so timm models are built untrained
(`pretrained=False`); the input is the digits demo's (3 x 32 x 32, batch 32).
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import optuna
import torch

from ..runtime.latency_model import prediction_errors
from ..study.latency import calibration_sparsities, measured_relative_latency
from ..study.prepared import PreparedModel
from ..study.space import resolve_search_space
from ..targets.base import Target

logger = logging.getLogger(__name__)


def check_latency_model(model_name: str, target: Target, configurations: int = 30,
                        calibration_points: int = 8, batch_size: int = 32, size: int = 32,
                        rounds: int = 7, block_seconds: float = 0.02, seed: int = 0
                        ) -> dict[str, Any]:
    """Build the latency model of timm `model_name` and score it on fresh configurations."""
    import timm

    from ..study.latency import study_latency_model

    torch.manual_seed(seed)
    extra = {"img_size": size} if "deit" in model_name or "vit" in model_name else {}
    model = timm.create_model(model_name, pretrained=False, num_classes=10, **extra).eval()
    inputs = torch.randn(batch_size, 3, size, size)
    prepared = PreparedModel.build(model, inputs, resolve_search_space(model, None),
                                   device=target.device)
    scratch = optuna.create_study()
    started = time.perf_counter()
    latency_model = study_latency_model(scratch, prepared, target, calibration_points, rounds,
                                        block_seconds, seed=seed)
    built = time.perf_counter() - started
    pairs = []
    sparsities = calibration_sparsities(prepared, configurations + len(
        prepared.space.uniform_ratios), seed=seed + 1000)[len(prepared.space.uniform_ratios):]
    for sparsity in sparsities:
        measured = measured_relative_latency(prepared, target, sparsity, rounds, block_seconds)
        pairs.append((latency_model.relative(sparsity), measured))
    errors = prediction_errors(pairs) or {}
    figures = {"model": model_name, "input": [batch_size, 3, size, size],
               "dimensions": len(prepared.dimensions), "tabled_layers": len(latency_model.layers),
               "build_seconds": built, "coefficients": list(latency_model.coefficients),
               "measured_speedups": sorted(1 / m for _, m in pairs),
               "pairs": [{"predicted": p, "measured": m} for p, m in pairs], **errors}
    logger.info(f"{model_name}: median |error| {errors.get('median_abs_error', float('nan')):.1%}, "
                f"{errors.get('within_10pct', float('nan')):.0%} within +-10 % over "
                f"{len(pairs)} configurations (speedups "
                f"{min(figures['measured_speedups']):.2f}-{max(figures['measured_speedups']):.2f}x, "
                f"median {statistics.median(figures['measured_speedups']):.2f}x); built in "
                f"{built:.1f} s")
    return figures

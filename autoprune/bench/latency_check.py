"""How well the latency model predicts: configurations drawn from the search space, each
pruned and timed paired against the unpruned model, compared with the prediction.

The configurations are drawn with another seed than the calibration points, so the figures
are out of sample; each is timed for three times a trial's rounds, so the figure it is
compared with is steadier than a trial's own. Weights do not change latency, so timm models are built untrained
(`pretrained=False`); the input is the digits demo's (3 x 32 x 32, batch 32).
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import optuna
import timm
import torch

from ..console import quiet_optuna
from ..runtime.latency_model import prediction_errors
from ..study.latency import calibration_sparsities, paired_at, study_latency_model
from ..study.prepared import PreparedModel
from ..study.space import resolve_search_space
from ..targets.base import Target

logger = logging.getLogger(__name__)


def check_latency_model(model_name: str, target: Target, configurations: int = 30,
                        calibration_points: int = 8, batch_size: int = 32, size: int = 32,
                        rounds: int = 7, block_seconds: float = 0.02, seed: int = 0
                        ) -> dict[str, Any]:
    """Build the latency model of timm `model_name` and score it on fresh configurations."""
    with quiet_optuna():
        torch.manual_seed(seed)
        extra = {"img_size": size} if "deit" in model_name or "vit" in model_name else {}
        model = timm.create_model(model_name, pretrained=False, num_classes=10, **extra).eval()
        inputs = torch.randn(batch_size, 3, size, size)
        prepared = PreparedModel.build(model, inputs, resolve_search_space(model, None),
                                       device=target.device)
        started = time.perf_counter()
        latency_model = study_latency_model(optuna.create_study(), prepared, target,
                                            calibration_points, rounds, block_seconds, seed=seed,
                                            max_rounds=3 * rounds)
        built = time.perf_counter() - started
        references = len(prepared.space.uniform_ratios)  # drawn again first: skipped
        fresh = calibration_sparsities(prepared, configurations + references,
                                       seed=seed + 1000)[references:]
        pairs = []
        for sparsity in fresh:
            # the reference figure: three times a trial's rounds, none stopped early
            measured = 1.0 / paired_at(prepared, target, sparsity, 3 * rounds,
                                       block_seconds).speedup
            pairs.append((latency_model.relative(sparsity), measured))
    errors = prediction_errors(pairs) or {}
    speedups = sorted(1 / measured for _, measured in pairs)
    figures = {"model": model_name, "input": [batch_size, 3, size, size],
               "dimensions": len(prepared.dimensions), "tabled_layers": len(latency_model.layers),
               "build_seconds": built, "coefficients": list(latency_model.coefficients),
               "measured_speedups": speedups,
               "pairs": [{"predicted": p, "measured": m} for p, m in pairs], **errors}
    logger.info(f"{model_name}: median |error| {errors['median_abs_error']:.1%}, "
                f"{errors['within_10pct']:.0%} within +-10 % over {len(pairs)} configurations "
                f"(speedups {speedups[0]:.2f}-{speedups[-1]:.2f}x, median "
                f"{statistics.median(speedups):.2f}x); built in {built:.1f} s")
    return figures

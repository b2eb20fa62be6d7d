"""The study's latency model (runtime/latency_model.py): built once per study and target,
stored with the study, and reused by every later process.

Calibration points are drawn the way trials are: the uniform reference ratios of the space,
then random configurations from the same search space (Optuna's random sampler on a
throw-away in-memory study), so the fit covers the region the search will visit.

The stored model is never changed, but each trial predicts with it refitted (`recalibrated`):
its calibration points and the study's latest trials timed for real, whose paired speedups
are calibration points measured minutes, not an hour, before. On a shared machine the
speedups themselves drift as the load changes (reports/benchmarks/
resnet18-digits-hard-cpu-derived-starts: a search's predictions 7-13 % off its trials in one
direction, from a model that fitted its own points within 3 %); the refit follows them.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import replace

import optuna
from optuna.trial import TrialState

from ..console import ProgressBar
from ..runtime.latency_model import (LatencyModel, build_latency_model, calibrate,
                                     prediction_errors)
from ..runtime.measure import PairedLatency, paired_latency
from ..store.records import StudyRecord, TrialRecord, own_reading, record_study
from ..targets.base import Target
from .config import config_from_params, suggest_config, uniform_params
from .prepared import PreparedModel

logger = logging.getLogger(__name__)


def calibration_sparsities(prepared: PreparedModel, count: int, seed: int = 0
                           ) -> list[dict[str, float]]:
    """`count` sparsities: the space's uniform ratios first, then random draws from the space."""
    space, dimensions = prepared.space, prepared.dimensions
    chosen = [config_from_params(uniform_params(space, dimensions, ratio), dimensions,
                                 space).sparsity for ratio in space.uniform_ratios][:count]
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while len(chosen) < count:
        chosen.append(suggest_config(scratch.ask(), space, dimensions).sparsity)
    return chosen


def paired_at(prepared: PreparedModel, target: Target, sparsity: dict, rounds: int,
              block_seconds: float, max_rounds: int | None = None) -> PairedLatency:
    """The copy pruned at `sparsity` timed against the unpruned model (measure.paired_latency)."""
    pruned = prepared.prune(sparsity).model
    return paired_latency(pruned, prepared.model, prepared.example_inputs, target, rounds,
                          block_seconds, max_rounds)


def settled_reference(study: optuna.Study, baseline: dict,
                      latency_model: LatencyModel) -> dict:
    """The study's unpruned figures with a reference latency that one moment's load cannot
    set: the median of the first reading and the calibration's readings of the unpruned model
    (taken over the model's build, seconds apart). Done once, before the first trial, by the
    process that built the model; every later process reads the settled figure."""
    if "first_latency_ms" in baseline or not latency_model.reference_ms:
        return baseline
    readings = [baseline["latency_ms"], *latency_model.reference_ms]
    settled = {**baseline, "latency_ms": statistics.median(readings),
               "first_latency_ms": baseline["latency_ms"]}
    record_study(study, baseline=settled)
    if abs(settled["latency_ms"] / baseline["latency_ms"] - 1) > 0.1:
        logger.info(f"unpruned latency settled at {settled['latency_ms']:.2f} ms over "
                    f"{len(readings)} readings (first reading {baseline['latency_ms']:.2f} ms)")
    return settled


def study_latency_model(study: optuna.Study, prepared: PreparedModel, target: Target,
                        calibration_points: int, rounds: int, block_seconds: float,
                        seed: int | None = 0, table_block_seconds: float = 0.004,
                        max_rounds: int | None = None) -> LatencyModel:
    """The study's latency model for `target`: stored one reused, else built and stored."""
    stored = StudyRecord.of(study).latency_model
    if stored is not None and stored.get("target") == target.name:
        return LatencyModel.from_dict(stored)
    sparsities = calibration_sparsities(prepared, calibration_points, seed or 0)
    logger.info(f"building the latency model: {len(prepared.dimensions)} dimensions' layers "
                f"timed at {target.describe()}, calibrated on {len(sparsities)} pruned copies ...")
    references = []

    def relative(sparsity: dict) -> float:
        paired = paired_at(prepared, target, sparsity, rounds, block_seconds, max_rounds)
        references.append(paired.reference_ms)
        return 1.0 / paired.speedup

    with ProgressBar("latency model", total=None, unit="step") as bar:
        model = build_latency_model(
            prepared.model, prepared.example_inputs, prepared.dimensions, target,
            prepared.space.round_to, sparsities, relative,
            on_progress=lambda: bar.update(1), table_block_seconds=table_block_seconds,
            blocks=prepared.blocks_in_removal_order())
    model.reference_ms = references
    errors = [abs(point["predicted"] - point["measured"]) / point["measured"]
              for point in model.calibration]
    logger.info(f"latency model: {len(model.layers)} layers tabled in {model.build_seconds:.1f} s;"
                f" calibration error median {sorted(errors)[len(errors) // 2]:.1%}"
                if errors else f"latency model: {len(model.layers)} layers tabled")
    record_study(study, latency_model=model.to_dict())
    return model


RECENT_TIMED_TRIALS = 16  # the latest timed trials that join the calibration points


def recalibrated(latency_model: LatencyModel, study: optuna.Study,
                 recent: int = RECENT_TIMED_TRIALS) -> LatencyModel:
    """`latency_model` with its calibration refitted on its own points and the `recent` latest
    completed fp32 trials timed paired (see the module docstring); the stored model as it is
    while no trial was timed. The tables are shared, not copied: a refit costs milliseconds."""
    points = []
    trials = study.get_trials(deepcopy=False)
    for trial in reversed(trials):
        record = TrialRecord.of(trial)
        config = record.config or {}
        if (trial.state == TrialState.COMPLETE and own_reading(record, trials) and record.speedup
                and config.get("precision", "fp32") == "fp32" and "sparsity" in config):
            points.append((config["sparsity"], 1.0 / record.measured_speedup))
            if len(points) == recent:
                break
    if not points:
        return latency_model
    refitted = replace(latency_model)
    calibrate(refitted, [(point["sparsity"], point["measured"])
                         for point in latency_model.calibration] + points[::-1])
    return refitted


# The prediction's share of a trial's latency estimate (log scale). Inverse-variance weighting
# of the two, with the median errors measured against the median of a copy's other readings on
# three families (reading 2.5-3.6 %, prediction 4.5-5.3 %: reading-reproducibility), gives
# about 0.3. 0 keeps the reading alone.
PREDICTION_WEIGHT = 1 / 3
TRUSTED_FIT_ERROR = 0.10  # a model missing its own points by more (median) bends no reading


def prediction_weight(latency_model: LatencyModel, weight: float = PREDICTION_WEIGHT) -> float:
    """`weight`, or 0 when `latency_model` does not fit its own calibration points (median
    error above 10 %: a model or machine the table does not describe)."""
    fit = prediction_errors((point["predicted"], point["measured"])
                            for point in latency_model.calibration if not point.get("outlier"))
    return weight if fit is None or fit["median_abs_error"] <= TRUSTED_FIT_ERROR else 0.0


def estimated_speedup(measured: float, predicted: float | None, weight: float) -> float:
    """A trial's speedup: the paired reading and the latency model's prediction, combined as
    a weighted geometric mean (`weight` the prediction's share); the reading alone without a
    prediction."""
    if not predicted or weight <= 0:
        return measured
    return math.exp((1 - weight) * math.log(measured) + weight * math.log(predicted))

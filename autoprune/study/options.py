"""The knobs of `search()` most users leave alone, as one typed object (as Optuna keeps
`create_study` short): timing effort, how a time budget is split, how often a waiting worker
looks again. Tests pass quicker settings here instead of patching module constants."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError
from ..runtime.language_model import LM_LATENCIES
from .latency import PREDICTION_WEIGHT


@dataclass(frozen=True)
class SearchOptions:
    """Rarely changed settings of a search; the defaults are what the benchmarks used."""

    latency_run_time: float = 0.3  # seconds of timed runs per latency measurement in a trial
    latency_rounds: int = 7        # rounds of paired timing (pruned, unpruned) per trial ...
    latency_max_rounds: int = 15   # ... and up to this many while the speedup is uncertain
    calibration_points: int = 8    # pruned copies timed to calibrate the latency model
    # a timed trial's speedup: its paired reading and the latency model's prediction combined,
    # this the prediction's share (study/latency.estimated_speedup; 0: the reading alone)
    latency_prediction_weight: float = PREDICTION_WEIGHT
    table_block_seconds: float = 0.002  # per timed block of one layer variant in the table
    # the front re-timed at the end, interleaved with the unpruned model: this many rounds,
    # each model 2.5 x latency_run_time in all (many short rounds: one burst of load moves the
    # median less than in a few long ones; reports/benchmarks/final-retiming-noise)
    final_rounds: int = 15
    target_trials: int = 15        # a time budget is split so that about this many trials fit
    max_finetune_epochs: int = 3   # the most a time budget gives one trial's fine-tuning
    gradient_batches: int = 2      # batches of gradients for the Taylor criterion
    max_repeated_failures: int = 5  # trials in a row failing alike end the search (0: never)
    poll_seconds: float = 2.0      # how often a worker waiting for others' trials looks again
    # the default front floor (top-1 metric, no `min_accuracy` given): this share of the way
    # from chance to the unpruned model's accuracy (0: chance itself; None: no default floor)
    front_floor_share: float | None = 0.5
    # the last share of a time budget fine-tunes the front longer instead of sampling more
    # (promotion.py; None or 0: never); trials get the time before it
    promote_share: float | None = 0.5
    # training batches whose activation ranges calibrate an int8 trial's quantization
    calibration_batches: int = 8
    # with int8 searched and a time budget: each fp32 front member's fine-tuned weights are
    # also tried in int8 (promotion.quantize_front), seconds each instead of a whole trial
    int8_twins: bool = True
    # a causal LM's latency (runtime/language_model.py): "decode", generating decode_tokens
    # tokens one at a time with the KV cache after the example batch as the prompt (decode
    # throughput = batch x decode_tokens / latency); "generate", the prompt read and those
    # tokens; "prefill", the prompt alone
    lm_latency: str = "decode"
    decode_tokens: int = 16

    @property
    def block_seconds(self) -> float:
        """One timed block of one model in paired timing: the run time over both models."""
        return self.latency_run_time / (2 * self.latency_rounds)

    @property
    def final_block_seconds(self) -> float:
        """One timed block of one model in the front's final re-timing."""
        return 2.5 * self.latency_run_time / self.final_rounds

    def __post_init__(self):
        for name in ("latency_run_time", "poll_seconds", "table_block_seconds"):
            if not getattr(self, name) > 0:
                raise InvalidInputError(f"SearchOptions.{name} must be positive, "
                                        f"got {getattr(self, name)!r}")
        if self.front_floor_share is not None and not 0 <= self.front_floor_share <= 1:
            raise InvalidInputError(f"SearchOptions.front_floor_share must lie in [0, 1], "
                                    f"got {self.front_floor_share!r}")
        if not 0 <= self.latency_prediction_weight < 1:
            raise InvalidInputError(f"SearchOptions.latency_prediction_weight must lie in [0, 1), "
                                    f"got {self.latency_prediction_weight!r}")
        if self.promote_share is not None and not 0 <= self.promote_share < 1:
            raise InvalidInputError(f"SearchOptions.promote_share must lie in [0, 1), "
                                    f"got {self.promote_share!r}")
        if self.lm_latency not in LM_LATENCIES:
            raise InvalidInputError(f"SearchOptions.lm_latency must be one of "
                                    f"{', '.join(LM_LATENCIES)}, got {self.lm_latency!r}")
        if not (isinstance(self.decode_tokens, int) and self.decode_tokens >= 0):
            raise InvalidInputError(f"SearchOptions.decode_tokens must be a whole number of at "
                                    f"least 0, got {self.decode_tokens!r}")
        for name in ("final_rounds", "target_trials", "max_finetune_epochs", "latency_rounds",
                     "latency_max_rounds", "calibration_points", "calibration_batches"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise InvalidInputError(f"SearchOptions.{name} must be a whole number of at "
                                        f"least 1, got {getattr(self, name)!r}")

"""Successive halving over fine-tuning time: the end of a time budget fine-tunes the front's
models longer.

A trial fine-tunes briefly: enough to rank configurations, not to finish them, and a model
pruned hard needs far more steps than the ranking does. So when a time budget reaches its last
share (`SearchOptions.promote_share`), the search stops sampling and promotes the current
front: each member is enqueued again as a new trial that continues from its checkpoint for as
many steps as the time left allows (shared equally in seconds, so faster models get more
steps). When a round is done and time is left, the front of that moment is promoted again
(its members not continued yet, promotions included); when no round fits, new trials fill
the rest. Being trials, promotions are recorded, survive a crash, run on any worker and are
judged on the front like any other; the member a promotion continues drops off the front
when its continuation beats or equals it. A member that could not get at least a brief
trial's steps is left out (the front is thinned evenly along latency) rather than promoted
for too little.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..results.pareto import front_trials
from ..store.records import TrialRecord, trial_facts
from .config import PRECISION_PARAM

logger = logging.getLogger(__name__)

FILL = 0.85  # share of the time left that promotions are planned to fill: timings vary


@dataclass(frozen=True)
class Promotion:
    member: FrozenTrial  # the front member to fine-tune further
    steps: int


def steps_run(record: TrialRecord, default: int) -> int:
    """Fine-tuning steps a trial ran itself (to its screen when stopped early)."""
    return record.promoted_steps or record.finetuned_steps or default


def promotable(study: optuna.Study, front: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """Front members worth continuing, fastest first: fine-tuned, with a checkpoint, and not
    continued already (by this worker or another). A promotion may be promoted again.
    `front`: the study's front when the caller tracks it already (FrontTracker)."""
    claimed = {TrialRecord.of(t).continues for t in study.get_trials(deepcopy=False)
               if t.state != TrialState.FAIL}
    members = []
    for trial in front_trials(study) if front is None else front:
        record = TrialRecord.of(trial)
        if (record.checkpoint_artifacts and not record.skipped_finetune
                and trial.number not in claimed):
            members.append(trial)
    return sorted(members, key=lambda t: t.values[1])


def _spread(members: list[FrozenTrial], count: int) -> list[FrozenTrial]:
    """`count` members evenly spaced along the (latency-sorted) list, both ends kept."""
    if count >= len(members):
        return members
    if count == 1:
        return [members[0]]
    picks = sorted({round(i * (len(members) - 1) / (count - 1)) for i in range(count)})
    return [members[i] for i in picks]


def _costs(member: FrozenTrial, default_steps: int) -> tuple[float, float]:
    """(seconds per fine-tuning step, seconds of the rest) of continuing `member`, from what
    its own trial took (sampling and pruning are not repeated by a promotion)."""
    record = TrialRecord.of(member)
    seconds = record.seconds or {}
    evaluation = seconds.get("evaluate", 0.0)
    training = seconds.get("finetune", 0.0)
    if record.screen_step and not record.stopped_early:
        training -= evaluation  # the screen's evaluation ran inside fine-tuning
    per_step = max(0.0, training) / max(1, steps_run(record, default_steps))
    rest = evaluation + seconds.get("save", 0.0) + (
        seconds.get("measure", 0.0) if record.latency_source != "paired" else 0.0)
    return per_step, rest


def plan_promotions(members: list[FrozenTrial], seconds_left: float,
                    min_steps: int) -> list[Promotion]:
    """Split `FILL` of `seconds_left` equally among as many members as can each fine-tune at
    least `min_steps` more steps in their share."""
    for count in range(len(members), 0, -1):
        chosen = _spread(members, count)
        share = FILL * seconds_left / count
        plan = []
        for member in chosen:
            per_step, rest = _costs(member, min_steps)
            steps = int((share - rest) / per_step) if per_step > 0 else 0
            plan.append(Promotion(member, steps))
        if all(p.steps >= min_steps for p in plan):
            return plan
    return []


def promote_front(study: optuna.Study, seconds_left: float, min_steps: int,
                  front: list[FrozenTrial] | None = None) -> list[Promotion]:
    """Enqueue the promotions that fit in `seconds_left` (they run before any new trial)."""
    plan = plan_promotions(promotable(study, front), seconds_left, min_steps)
    for promotion in plan:
        study.enqueue_trial(promotion.member.params, skip_if_exists=False,
                            user_attrs=trial_facts(continues=promotion.member.number,
                                                   promoted_steps=promotion.steps))
    if plan:
        members = "member" if len(plan) == 1 else "members"
        logger.info(f"promoting {len(plan)} front {members} for longer fine-tuning: " + ", ".join(
            f"trial {p.member.number} +{p.steps} steps" for p in plan))
    return plan


def waiting_promotions(study: optuna.Study) -> int:
    """Promotions and int8 twins enqueued and not started yet (by any worker)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if TrialRecord.of(t).continues is not None
               or TrialRecord.of(t).quantizes is not None)


class Int8Twins:
    """Tries each fp32 front member's fine-tuned weights in int8 too.

    Quantization comes after fine-tuning and needs none of its own, so the int8 version of a
    fine-tuned model costs seconds (quantize, score, time), not a trial: a search that had to
    sample int8 and fp32 separately would pay a whole fine-tune for each. Whether int8 pays
    depends on the model and how hard it is pruned (reports/benchmarks/int8-uniform-digits-
    hard-cpu), so each twin is judged on the front like any trial; a twin on the front can be
    promoted (its weights fine-tuned longer and quantized again).
    """

    def __init__(self):
        self.twinned: set[int] = set()  # members with a twin queued, run or failed

    def enqueue(self, study: optuna.Study, front: list[FrozenTrial]) -> int:
        """Enqueue the twins of the fp32 front members that have none; how many."""
        members = [t for t in front if t.number not in self.twinned and _twinnable(t)]
        if not members:
            return 0
        # one look at the study per new member: another worker may have twinned it already
        self.twinned |= {TrialRecord.of(t).quantizes for t in study.get_trials(deepcopy=False)}
        members = [t for t in members if t.number not in self.twinned]
        for member in members:
            study.enqueue_trial({**member.params, PRECISION_PARAM: "int8"}, skip_if_exists=False,
                                user_attrs=trial_facts(quantizes=member.number))
            self.twinned.add(member.number)
        if members:
            logger.info("trying in int8: " + ", ".join(f"trial {t.number}" for t in members))
        return len(members)


def _twinnable(trial: FrozenTrial) -> bool:
    record = TrialRecord.of(trial)
    return ((record.config or {}).get("precision", "fp32") == "fp32"
            and bool(record.checkpoint_artifacts) and not record.skipped_finetune)

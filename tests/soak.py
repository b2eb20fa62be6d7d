"""Soak run: does a long study stay as fast as its first trials? (`python tests/soak.py --help`)

A tiny model with one fine-tuning step per trial, so nearly all of a trial's time is
autoprune's own: sampling, pruning, measuring, saving, storage and callbacks. It prints that
time (a trial's completion minus the previous one's, less fine-tuning and evaluation) per
block of trials, with the share spent in Optuna's sampler, whether any trial was left RUNNING, whether the checkpoints on disk are
exactly the front's, and how long the report takes to build. `--out-of-memory N` also runs N
trials whose fine-tuning raises `torch.OutOfMemoryError` and prints the process's resident
memory before and after them.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).parent))

import autoprune  # noqa: E402
from autoprune.results.pareto import front_trials  # noqa: E402
from autoprune.results.report import write_report  # noqa: E402
from tiny_models import TinyResNet, tiny_data  # noqa: E402

SAMPLER_SECONDS: dict[int, float] = {}  # trial number -> seconds in Optuna's sampler


STEPS = ("prune", "measure", "finetune", "evaluate", "save")


class TimedSampler(optuna.samplers.BaseSampler):
    """autoprune's default sampler (multivariate TPE, as `search()` builds it for this model),
    timed per trial, so Optuna's own share of the bookkeeping can be told apart from ours."""

    def __init__(self):
        self.inner = optuna.samplers.TPESampler(multivariate=True, seed=0, constant_liar=True,
                                                n_startup_trials=8)

    def _timed(self, trial, call, *args):
        start = time.perf_counter()
        try:
            return call(*args)
        finally:
            SAMPLER_SECONDS[trial.number] = (SAMPLER_SECONDS.get(trial.number, 0.0)
                                             + time.perf_counter() - start)

    def infer_relative_search_space(self, study, trial):
        return self._timed(trial, self.inner.infer_relative_search_space, study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._timed(trial, self.inner.sample_relative, study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):
        return self._timed(trial, self.inner.sample_independent, study, trial, name,
                           distribution)

    def before_trial(self, study, trial):
        self._timed(trial, self.inner.before_trial, study, trial)

    def after_trial(self, study, trial, state, values):
        self._timed(trial, self.inner.after_trial, study, trial, state, values)


def own_seconds(trials: list) -> list[tuple[int, float, float]]:
    """(trial number, autoprune's own seconds, bookkeeping seconds) for each complete trial
    after the first. Own: from the previous trial's completion to this one's, less
    fine-tuning and evaluation. Bookkeeping: the part of it outside the trial's timed steps
    (sampling, storage, callbacks), the part that could grow with the number of trials."""
    done = sorted((t for t in trials if t.state.is_finished() and t.datetime_complete),
                  key=lambda t: t.datetime_complete)
    result = []
    for previous, trial in zip(done, done[1:]):
        cycle = (trial.datetime_complete - previous.datetime_complete).total_seconds()
        seconds = {step: trial.user_attrs.get(f"seconds_{step}", 0.0) for step in STEPS}
        if trial.state == TrialState.COMPLETE:
            result.append((trial.number, cycle - seconds["finetune"] - seconds["evaluate"],
                           cycle - sum(seconds.values())))
    return result


def resident_mb() -> float:
    """The process's current resident memory (Linux /proc), in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2 ** 20


def out_of_memory_trials(count: int, directory: Path) -> dict:
    """Resident memory before and after `count` trials that run out of memory while training."""
    raised = {"n": 0}

    def runs_out_of_memory(logits, targets):
        if logits.requires_grad and raised["n"] < count:
            raised["n"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by tests/soak.py)")
        return F.cross_entropy(logits, targets)

    train, val = tiny_data()
    before = resident_mb()
    autoprune.search(TinyResNet(), trials=3, finetune_steps=1, train=train, val=val,
                     loss=runs_out_of_memory, output_dir=directory, study_name="oom",
                     threads=1, write_report=False, verbose=False)
    after_oom = resident_mb()
    study = optuna.load_study(study_name="oom", storage=f"sqlite:///{directory / 'oom' / 'study.db'}")
    failed = [t.user_attrs.get("failure") for t in study.trials if t.state == TrialState.FAIL]
    return {"failed_trials": len(failed), "reasons": sorted(set(failed)),
            "resident_mb_before": round(before, 1), "resident_mb_after": round(after_oom, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--block", type=int, default=100, help="trials per line of the table")
    parser.add_argument("--output-dir", default="reports/soak")
    parser.add_argument("--analyse-only", action="store_true",
                        help="read the study already in --output-dir (also while it runs)")
    parser.add_argument("--out-of-memory", type=int, default=0, metavar="N")
    args = parser.parse_args()
    directory = Path(args.output_dir)
    storage = f"sqlite:///{directory / 'soak' / 'study.db'}"
    started = time.time()
    if not args.analyse_only:
        train, val = tiny_data()
        autoprune.search(TinyResNet(), trials=args.trials, finetune_steps=1, train=train,
                         val=val, output_dir=directory, study_name="soak", threads=1,
                         write_report=False, verbose=False, sampler=TimedSampler())
    study = optuna.load_study(study_name="soak", storage=storage)
    trials = study.get_trials(deepcopy=False)
    figures = own_seconds(trials)
    blocks = [figures[i:i + args.block] for i in range(0, len(figures), args.block)]
    print(f"{len(trials)} trials; seconds per trial, per block of trials: autoprune's own "
          "(median, mean) and its bookkeeping (mean)")
    for block in blocks:
        own = [s for _, s, _ in block]
        sampler = [SAMPLER_SECONDS[n] for n, _, _ in block if n in SAMPLER_SECONDS]
        print(f"  trials {block[0][0]:>5}-{block[-1][0]:>5}: own median {statistics.median(own):.3f},"
              f" mean {statistics.mean(own):.3f}; bookkeeping "
              f"{statistics.mean(b for _, _, b in block):.3f}"
              + (f", of which Optuna's sampler {statistics.mean(sampler):.3f}" if sampler else ""))
    first, last = blocks[0], blocks[-1]
    ratio = statistics.mean(s for _, s, _ in last) / statistics.mean(s for _, s, _ in first)
    bookkeeping_ratio = (statistics.mean(b for _, _, b in last)
                         / statistics.mean(b for _, _, b in first))
    ours = {}  # autoprune's own seconds less the sampler's, where the sampler was timed
    for name, block in (("first", first), ("last", last)):
        timed = [s - SAMPLER_SECONDS[n] for n, s, _ in block if n in SAMPLER_SECONDS]
        ours[name] = statistics.mean(timed) if timed else None
    running = sum(t.state == TrialState.RUNNING for t in trials)
    front = {t.number for t in front_trials(study)}
    files = sum(1 for path in (directory / "soak" / "artifacts").rglob("*") if path.is_file())
    start = time.perf_counter()
    write_report(study, directory / "soak" / "report.html", storage)
    report_seconds = time.perf_counter() - start
    summary = {"trials": len(trials), "last_block_over_first_block": round(ratio, 3),
               "bookkeeping_last_over_first": round(bookkeeping_ratio, 3),
               "without_sampler_last_over_first": round(ours["last"] / ours["first"], 3)
               if ours["first"] else None,
               "running_left": running, "front": len(front),
               "checkpoints_on_disk": files / 2,  # weights + architecture per checkpoint
               "report_seconds": round(report_seconds, 2),
               "wall_seconds": round(time.time() - started, 1)}
    if args.out_of_memory:
        summary["out_of_memory"] = out_of_memory_trials(args.out_of_memory, directory)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

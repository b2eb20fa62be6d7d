"""autoprune behaves like a library of the PyTorch / Optuna ecosystem: it logs through its own
logger, leaves the caller's globals as they were, names its objectives, and its progress
output is fit for a log file when there is no terminal."""

import importlib.metadata
import logging
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import optuna
import pytest
import torch
import torch_pruning as tp
from tiny_models import TinyResNet, tiny_data

from autoprune.cli import main
from autoprune.console import ProgressBar

TESTS = Path(__file__).parent


def test_search_messages_go_through_the_autoprune_logger(tiny_search, caplog):
    caplog.set_level(logging.INFO, logger="autoprune")
    tiny_search(trials=3, finetune_steps=2, verbose=True)
    by_logger = {}
    for record in caplog.records:
        by_logger.setdefault(record.name, []).append(record.getMessage())
    assert any("measuring the unpruned model" in m for m in by_logger["autoprune.study.baseline"])
    assert any(m.startswith("Pareto front") for m in by_logger["autoprune.study.runner"])
    assert sum(m.startswith("[trial") for m in by_logger["autoprune.study.callbacks"]) == 3
    assert all(name.startswith("autoprune") for name in by_logger)


def test_verbose_false_keeps_the_search_to_warnings(tiny_search, caplog):
    caplog.set_level(logging.INFO, logger="autoprune")
    tiny_search(trials=3, finetune_steps=2, verbose=False)
    assert [r for r in caplog.records if r.name.startswith("autoprune")
            and r.levelno < logging.WARNING] == []
    assert logging.getLogger("autoprune").level == logging.INFO  # the caller's level is back


def callers_globals() -> dict:
    package_logger = logging.getLogger("autoprune")
    return {
        "optuna verbosity": optuna.logging.get_verbosity(),
        "torch threads": torch.get_num_threads(),
        "warnings filters": list(warnings.filters),
        "torch random state": torch.get_rng_state().tolist(),
        "autoprune logger": (package_logger.level, list(package_logger.handlers)),
        "torch-pruning MAC table": set(tp.utils.op_counter.MODULES_MAPPING),
    }


def test_search_leaves_the_callers_globals_as_they_were(tiny_search):
    model, data = TinyResNet(), tiny_data()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    torch.set_num_threads(2)
    torch.manual_seed(1234)
    before = callers_globals()
    tiny_search(model, data, trials=3, finetune_steps=2, verbose=True, seed=7)
    assert callers_globals() == before


def test_the_study_names_its_objectives(tiny_search, tmp_path):
    tiny_search(trials=3, finetune_steps=2)
    # What optuna-dashboard and Optuna's plots read: the names stored with the study.
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert stored.metric_names == ["accuracy", "latency_ms", "memory_mb"]


def test_version_option_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"autoprune {importlib.metadata.version('autoprune')}")


def test_progress_without_a_terminal_is_an_occasional_plain_log_line(caplog):
    caplog.set_level(logging.INFO, logger="autoprune")
    with ProgressBar("trial 3 fine-tuning", total=4, plain_every=0) as bar:
        bar.update(1, loss=0.5)
    assert [r.getMessage().split(", about")[0] for r in caplog.records] == [
        "trial 3 fine-tuning: 1/4 step, loss 0.5"]


def test_a_search_whose_output_is_not_a_terminal_prints_lines_without_bar_controls(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import autoprune
        from tiny_models import QUICK, TinyResNet, tiny_data
        train, val = tiny_data()
        autoprune.search(TinyResNet(), trials=3, finetune_steps=2, train=train, val=val,
                         output_dir={str(tmp_path)!r}, study_name="s", threads=1,
                         options=QUICK)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stderr.splitlines()
    assert any(line.startswith("[trial   2]") for line in lines), run.stderr[-3000:]
    assert any(line.startswith("report: ") for line in lines)
    assert "\r" not in run.stderr and "\x1b[" not in run.stderr

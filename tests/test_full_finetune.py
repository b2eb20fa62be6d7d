"""Fine-tuning a pick for real: the best epoch kept, a resume after a kill, the result stored
and used by load / export / best / the report in this process and another, the CLI."""

import sys
import textwrap

import pytest
import torch
from tiny_models import TinyResNet, tiny_data

import autoprune
from autoprune.cli import main
from autoprune.errors import InvalidInputError
from autoprune.results.full_finetune import (PROGRESS_FILE, FinetuneSettings, finetune_pick,
                                             kendall_tau)
from autoprune.results.report import report_data
from autoprune.results.result import SearchResult
from autoprune.runtime.task import classification_task

SETTINGS = FinetuneSettings(epochs=4, lr=0.01, alpha=0.5, temperature=2.0, optimizer="adamw")


def scored_by(val, metric=None):
    """The built-in classification task on `val`, with `metric` (top-1 if None)."""
    return classification_task(val, "cpu", metric)


def outputs(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.randn(5, 3, 8, 8))


def rising_metric():
    """A metric that improves at every evaluation: the last epoch is the best."""
    calls = []

    def metric(logits, targets):
        calls.append(1)
        return len(calls) / 100

    return metric


def test_the_best_epoch_is_kept(tmp_path):
    train, val = tiny_data()
    falling = iter(range(100, 0, -1))
    student = TinyResNet()
    brief = outputs(student)
    progress = finetune_pick(student, TinyResNet(), train,
                             scored_by(val, lambda logits, targets: next(falling) / 100),
                             SETTINGS, tmp_path, "cpu")
    assert progress["completed"] == 4 and progress["best_epoch"] == 0  # none beat the brief
    assert torch.equal(outputs(student), brief)

    student = TinyResNet()
    progress = finetune_pick(student, TinyResNet(), train, scored_by(val, rising_metric()),
                             SETTINGS, tmp_path / "b", "cpu")
    assert progress["best_epoch"] == 4 and not torch.equal(outputs(student), brief)


def test_a_fine_tune_killed_at_epoch_2_of_4_resumes_there_and_ends_after_4(tmp_path):
    train, val = tiny_data()
    seen = []

    def killed_at_2(epoch, metric):
        seen.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_pick(TinyResNet(), TinyResNet(), train, scored_by(val, rising_metric()),
                      SETTINGS, tmp_path, "cpu", on_epoch=killed_at_2)
    assert '"completed": 2' in (tmp_path / PROGRESS_FILE).read_text()
    progress = finetune_pick(TinyResNet(), TinyResNet(), train, scored_by(val, rising_metric()),
                             SETTINGS, tmp_path, "cpu", on_epoch=lambda e, m: seen.append(e))
    assert seen == [1, 2, 3, 4]  # epochs 1 and 2 were not run again
    assert [h["epoch"] for h in progress["history"]] == [1, 2, 3, 4]

    other = FinetuneSettings(epochs=4, lr=0.001, alpha=0.5, temperature=2.0, optimizer="adamw")
    with pytest.raises(InvalidInputError, match="other settings"):
        finetune_pick(TinyResNet(), TinyResNet(), train, scored_by(val), other, tmp_path, "cpu")
    progress = finetune_pick(TinyResNet(), TinyResNet(), train, scored_by(val),
                             FinetuneSettings(1, 0.001, 0.5, 2.0, "adamw"), tmp_path, "cpu",
                             restart=True)
    assert progress["completed"] == 1


def test_a_pick_fine_tuned_is_what_load_export_best_and_the_report_use(tiny_search, tmp_path):
    result = tiny_search(trials=3)
    result.metric_fn = rising_metric()  # so that the last epoch is the best: new weights
    pick = result.pareto[0]
    brief = outputs(result.load(pick.trial))
    model = result.finetune(pick.trial, epochs=2)
    assert torch.equal(outputs(result.load(pick.trial)), outputs(model))
    assert torch.equal(outputs(result.load(pick.trial, brief=True)), brief)
    assert not torch.equal(outputs(model), brief)

    candidate = next(c for c in result.pareto if c.trial == pick.trial)
    assert candidate.finetuned_epochs == 2 and candidate.brief_accuracy == pick.accuracy
    assert candidate.accuracy == result.finetuned[str(pick.trial)]["accuracy"]
    exported = result.export(pick.trial, tmp_path / "export")
    assert torch.equal(outputs(autoprune.load(exported, TinyResNet())), outputs(model))

    again = SearchResult.from_storage("s", f"sqlite:///{tmp_path / 's' / 'study.db'}",
                                      base_model=TinyResNet(), cache_dir=tmp_path / "elsewhere")
    assert torch.equal(outputs(again.load(pick.trial)), outputs(model))
    row = next(r for r in report_data(result.study).rows if r.number == pick.trial)
    assert row.full_finetune["epochs"] == 2


def test_bad_fine_tune_requests_are_refused_before_any_work(tiny_search, tmp_path):
    result = tiny_search(trials=2)
    pick = result.pareto[0].trial
    with pytest.raises(InvalidInputError, match="epochs"):
        result.finetune(pick, epochs=0)
    with pytest.raises(InvalidInputError, match="no trial 99"):
        result.finetune(99, epochs=1)
    stored = SearchResult.from_storage("s", f"sqlite:///{tmp_path / 's' / 'study.db'}")
    with pytest.raises(InvalidInputError, match="train= and val="):
        stored.finetune(pick, epochs=1)
    train, val = tiny_data()
    with pytest.raises(InvalidInputError, match="base_model="):
        stored.finetune(pick, epochs=1, train=train, val=val)
    assert not result.finetuned


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1
    scipy_stats = pytest.importorskip("scipy.stats")
    first, second = [0.9, 0.8, 0.85, 0.7, 0.7], [0.95, 0.9, 0.86, 0.8, 0.82]
    assert kendall_tau(first, second) == pytest.approx(scipy_stats.kendalltau(first, second)[0])


def test_the_cli_fine_tunes_a_pick_and_the_front(tmp_path, monkeypatch, capsys):
    (tmp_path / "cli_data.py").write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        def loaders():
            generator = torch.Generator().manual_seed(0)
            labels = torch.arange(48) % 3
            images = torch.randn(48, 3, 32, 32, generator=generator)
            images[:, 0] += labels.view(-1, 1, 1).float()
            data = TensorDataset(images, labels)
            return (DataLoader(data, batch_size=8, shuffle=True, generator=generator),
                    DataLoader(data, batch_size=8))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "cli_data", raising=False)
    out = ["--output-dir", str(tmp_path / "out")]
    assert main(["-q", "search", "--model", "test_resnet", "--data", "cli_data:loaders",
                 "--trials", "3", "--finetune-steps", "2", "--train-epochs", "1", "--threads",
                 "1", "--study-name", "mine", "--early-stop-margin", "off",
                 "--constraint", "min_accuracy=0", *out]) == 0
    result = SearchResult.from_storage("mine", f"sqlite:///{tmp_path / 'out' / 'mine' / 'study.db'}")
    pick = result.pareto[0].trial
    capsys.readouterr()
    assert main(["-q", "finetune", "mine", "--trial", str(pick), "--epochs", "1", *out]) == 0
    printed = capsys.readouterr().out
    assert "brief" in printed and f"\n{pick:>6} " in printed
    assert main(["-q", "finetune", "mine", "--front", "--epochs", "1", *out]) == 0
    if len(result.pareto) >= 2:
        assert "Kendall tau" in capsys.readouterr().out
    assert main(["-q", "finetune", "mine", *out]) == 2  # neither --trial nor --front

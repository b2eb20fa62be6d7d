"""Tasks beyond classification: the user's `evaluate` with its direction, `train_step` /
`distill`, `example_inputs`; a regression searched end to end with a minimized metric, and
each bad callable refused by name before trial 1."""

import math

import optuna
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import autoprune
from autoprune.errors import InvalidInputError
from autoprune.integrations.example_tasks import diabetes_loaders
from autoprune.results.pareto import non_dominated
from autoprune.results.result import SearchResult


def regressor() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 1))


@pytest.fixture(scope="module")
def trained():
    """A regressor trained on the diabetes table, its loaders and its RMSE function."""
    train, val = diabetes_loaders(batch_size=32)
    model = regressor()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        for x, y in train:
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            optimizer.step()

    def rmse(model: nn.Module) -> float:
        squared = [F.mse_loss(model(x), y, reduction="sum").item() for x, y in val]
        return math.sqrt(sum(squared) / len(val.dataset))

    return model.eval(), train, val, rmse


def distill(student_output, teacher_output, batch):
    """Half the true target, half the teacher's prediction."""
    _, target = batch
    return 0.5 * F.mse_loss(student_output, target) + 0.5 * F.mse_loss(student_output,
                                                                        teacher_output)


def search(tmp_path, model, train, rmse, **kwargs):
    arguments = dict(trials=4, train=train, evaluate=rmse, direction="minimize",
                     distill=distill, output_dir=tmp_path, finetune_steps=6, threads=1,
                     verbose=False, study_name="regression")
    return autoprune.search(model, **{**arguments, **kwargs})


def test_a_regressor_is_searched_with_its_error_minimized(tmp_path, trained):
    model, train, _, rmse = trained
    unpruned = rmse(model)
    result = search(tmp_path, model, train, rmse)
    study = result.study
    assert study.directions[0] == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names[0] == "rmse"
    assert result.baseline["accuracy"] == pytest.approx(unpruned)
    front = result.pareto
    assert front and all(c.metric["direction"] == "minimize" for c in front)
    # the front trades error for cost: a member with a higher error is cheaper than the
    # lower-error one in latency or memory (as the search measured them; the final
    # re-timing may reorder close members)
    values = [study.trials[c.trial].values for c in front]
    for error, latency, memory in values:
        for other_error, other_latency, other_memory in values:
            if error > other_error:
                assert latency < other_latency or memory < other_memory
    assert any(c.params < sum(p.numel() for p in model.parameters()) for c in front)
    # the front is the minimizing one: no completed feasible trial has both lower error and
    # lower latency than a member
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert {t.number for t in non_dominated(done, "minimize")} >= {c.trial for c in front}
    assert result.best() == min(front, key=lambda c: (c.accuracy, c.latency_ms))
    # the user's distill owns the loss: distillation is not searched
    assert not any(name.startswith("kd_") for t in done for name in t.params)
    # reload gives the same model: the checkpoint's outputs are the trial's
    pick = result.best()
    loaded = result.load(pick.trial)
    assert rmse(loaded) == pytest.approx(pick.accuracy, rel=1e-5)
    x = torch.randn(4, 10)
    assert torch.equal(loaded(x), result.load(pick.trial)(x))
    page = result.report().read_text()
    assert "rmse (lower is better)" in page and "rmse against latency" in page
    assert "rmse" in str(pick) and "%" not in str(pick).split("latency")[0]


def test_a_train_step_replaces_the_loss_and_example_inputs_the_batch(tmp_path, trained):
    model, train, _, rmse = trained
    # batches as dicts: the model's input is not batch[0]
    dict_batches = [{"x": x, "y": y} for x, y in train]
    seen = []

    def train_step(student, teacher, batch):
        seen.append(type(batch).__name__)
        return F.mse_loss(student(batch["x"]), batch["y"])

    result = search(tmp_path, model, dict_batches, rmse, distill=None, train_step=train_step,
                    example_inputs=torch.zeros(32, 10), trials=2)
    assert set(seen) == {"dict"} and len(result.study.trials) >= 2
    assert all(t.state.name == "COMPLETE" for t in result.study.trials[:2])


def test_the_built_in_classifier_keeps_its_metric_and_direction(tmp_path):
    from tiny_models import TinyResNet, tiny_data

    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), trials=2, train=train, val=val, output_dir=tmp_path,
                              finetune_steps=2, verbose=False, threads=1)
    assert result.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    assert result.study.metric_names[0] == "accuracy"
    assert "accuracy (%, higher is better)" in result.report().read_text()


@pytest.mark.parametrize("change, message", [
    (dict(direction="up"), "direction must be 'maximize' or 'minimize', got 'up'"),
    (dict(evaluate=lambda model: float("nan")), "evaluate (<lambda>) on the unpruned model: "
                                                "the metric is nan"),
    (dict(evaluate=lambda model: 1 / 0), "evaluate (<lambda>) fails on the unpruned model "
                                         "(ZeroDivisionError"),
    (dict(distill=None, train_step=lambda student, teacher, batch: 1.0),
     "train_step (<lambda>) must return a scalar float tensor (the batch's loss), got a float"),
    (dict(distill=lambda out, teacher, batch: (out - batch[1]) ** 2),
     "distill (<lambda>) must return a scalar float tensor (the batch's loss), got a tensor of "
     "shape (32, 1)"),
    (dict(constraints={"min_accuracy": 0.5}), "with direction='minimize' use max_accuracy_drop"),
    (dict(metric=lambda logits, targets: 0.0), "give metric= or evaluate=, not both"),
])
def test_a_bad_task_is_refused_by_name_before_any_trial(tmp_path, trained, change, message):
    model, train, _, rmse = trained
    rmse.__name__ = "rmse"
    with pytest.raises(InvalidInputError) as raised:
        search(tmp_path, model, train, rmse, **change)
    assert message in str(raised.value)
    assert not list(tmp_path.rglob("study.db"))


def test_minimize_without_evaluate_is_refused(tmp_path):
    from tiny_models import TinyResNet, tiny_data

    train, val = tiny_data()
    with pytest.raises(InvalidInputError, match="direction='minimize' needs evaluate="):
        autoprune.search(TinyResNet(), trials=1, train=train, val=val, direction="minimize",
                         output_dir=tmp_path, verbose=False)


def test_a_segmentation_model_is_searched_with_mean_iou_and_per_pixel_distillation(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from autoprune.integrations.example_tasks import (SEGMENTATION_CLASSES, pixel_distillation,
                                                      scenes_mean_iou, segmentation_loaders)

    train, val = segmentation_loaders(train_scenes=32, val_scenes=16, size=64, batch_size=8)
    torch.manual_seed(0)
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=SEGMENTATION_CLASSES).eval()
    miou = scenes_mean_iou(val)

    result = autoprune.search(model, trials=2, train=train, evaluate=miou,
                              distill=pixel_distillation, output_dir=tmp_path, finetune_steps=2,
                              threads=1, verbose=False)
    settings = result.study.user_attrs["settings"]
    assert settings["space"]["family"] == "segmentation"
    assert result.study.metric_names[0] == "miou"
    front = result.pareto
    assert front
    pick = min(front, key=lambda c: c.params)
    assert pick.params < sum(p.numel() for p in model.parameters())
    loaded = result.load(pick.trial)
    x = torch.randn(2, 3, 64, 64)
    out = loaded(x)["out"]
    assert out.shape == (2, SEGMENTATION_CLASSES, 64, 64)  # the classes stay whole
    assert miou(loaded) == pytest.approx(pick.accuracy, abs=1e-6)
    assert "miou (higher is better)" in result.report().read_text()


def test_a_pick_is_fine_tuned_with_the_users_task_in_its_direction(tmp_path, trained):
    model, train, _, rmse = trained
    result = search(tmp_path, model, train, rmse, trials=3)
    pick = result.best()
    tuned = result.finetune(pick, epochs=2)
    entry = result.finetuned[str(pick.trial)]
    # the best epoch is the lowest error, and it is what load() gives from then on
    errors = [entry["brief_accuracy"], *[h["metric"] for h in entry["history"]]]
    assert entry["accuracy"] == pytest.approx(min(errors))
    assert rmse(result.load(pick.trial)) == pytest.approx(entry["accuracy"], rel=1e-5)
    assert rmse(tuned) == pytest.approx(entry["accuracy"], rel=1e-5)

    stored = SearchResult.from_storage("regression", f"sqlite:///{tmp_path / 'regression' / 'study.db'}",
                                       base_model=model, cache_dir=tmp_path / "again")
    with pytest.raises(InvalidInputError, match="ranks models by its own rmse: pass evaluate="):
        stored.finetune(pick, epochs=1, train=train)
    stored.finetune(pick, epochs=1, train=train, evaluate=rmse, distill=distill, restart=True)


def test_checking_the_task_leaves_the_users_model_as_it_was():
    """The loss check runs a training-mode forward pass, which updates BatchNorm statistics:
    it must run on a copy, or the unpruned model's figures shift before the search starts."""
    from autoprune.runtime.task import check_task, user_task
    from tiny_models import TinyResNet, tiny_data

    train, _ = tiny_data()
    model = TinyResNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task = user_task(lambda m: 0.5, distill=lambda out, teacher, batch: F.cross_entropy(out, batch[1]))
    check_task(task, model, next(iter(train)), "cpu", {"score": "evaluate", "loss": "distill"})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training

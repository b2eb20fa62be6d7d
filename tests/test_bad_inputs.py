"""Bad input found before any work, each with a message naming the problem, and a search whose
trials keep failing the same way stopped with the reason instead of running for ever."""

import json
from dataclasses import replace

import optuna
import pytest
import torch
from PIL import Image
from safetensors.torch import save_model
from torch.utils.data import DataLoader, TensorDataset
from tiny_models import QUICK, TinyResNet, tiny_data

import autoprune
from autoprune.errors import CheckpointError, InvalidInputError, RepeatedFailureError
from autoprune.integrations.models import load_named_checkpoint, save_named_checkpoint
from autoprune.integrations.user_data import folder_loaders, inspect_folder
from autoprune.store.storage import open_storage


def _loader(images, labels):
    return DataLoader(TensorDataset(images, labels), batch_size=16)


def _search(tmp_path, train, val, **kwargs):
    return autoprune.search(TinyResNet(), trials=kwargs.pop("trials", 2), train=train, val=val,
                            finetune_steps=3, output_dir=tmp_path, study_name="s",
                            verbose=False, write_report=False, threads=1,
                            options=kwargs.pop("options", QUICK), **kwargs)


def _broken_training(kind):
    images, labels = torch.randn(32, 3, 8, 8), torch.arange(32) % 4
    if kind == "one channel":
        images = images[:, :1]
    elif kind == "label out of range":
        labels = labels.clone()
        labels[0] = 12
    else:
        images = torch.full_like(images, float("nan"))
    return _loader(images, labels)


@pytest.mark.parametrize("kind, message", [
    ("one channel", "fails on the first training batch"),
    ("label out of range", "fails on the first training batch"),
    ("all NaN", "returned nan on the first training batch")])
def test_training_batches_the_model_cannot_train_on_are_refused_before_trial_one(
        tmp_path, kind, message):
    _, val = tiny_data()
    with pytest.raises(InvalidInputError, match=message):
        _search(tmp_path, _broken_training(kind), val)
    assert not list(tmp_path.rglob("study.db"))  # no study was opened


def test_trials_failing_alike_stop_the_search_with_the_reason(tmp_path):
    _, val = tiny_data()
    images, labels = torch.randn(64, 3, 8, 8), torch.arange(64) % 4
    images[16:] = float("nan")  # the first batch (the pre-flight's) is fine, the rest is not
    options = replace(QUICK, max_repeated_failures=3)
    with pytest.raises(RepeatedFailureError, match="last 3 trials all failed with the same "
                                                   "error .*nan"):
        _search(tmp_path, _loader(images, labels), val, trials=100, options=options)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL"] * 3  # recorded, and no more were started


def test_a_latency_limit_below_the_fastest_configuration_is_refused_before_trial_one(tmp_path):
    train, val = tiny_data()
    with pytest.raises(InvalidInputError, match="below what the fastest configuration"):
        _search(tmp_path, train, val, constraints={"latency_ms": 1e-7})
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert not [t for t in study.trials if t.state.is_finished()]


@pytest.fixture
def named_checkpoint(tmp_path):
    import timm

    model = timm.create_model("resnet10t", num_classes=3, pretrained=False)
    return save_named_checkpoint(model, "resnet10t", 3, tmp_path / "model.safetensors")


@pytest.mark.parametrize("sidecar, message", [
    ("{not json", "is not valid JSON"),
    ("{}", "names no architecture"),
    ('{"timm_model": "resnet10t"}', '"num_classes" must be a positive integer'),
    ('{"timm_model": "resnet10t", "num_classes": 3, "timm_kwargs": {"wings": 2}}',
     "timm cannot build 'resnet10t' with timm_kwargs")])
def test_a_bad_sidecar_is_named_with_what_is_wrong(named_checkpoint, sidecar, message):
    named_checkpoint.with_suffix(".json").write_text(sidecar)
    with pytest.raises(InvalidInputError, match=message) as caught:
        load_named_checkpoint(named_checkpoint)
    assert "model.json" in str(caught.value) or "timm cannot" in str(caught.value)


def test_a_checkpoint_that_is_not_there_is_said_to_be_missing(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_named_checkpoint(tmp_path / "nowhere.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        autoprune.load(tmp_path / "no-checkpoint-dir", TinyResNet())


def test_a_corrupt_image_in_a_class_folder_is_named(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(4):
            Image.new("RGB", (8, 8), color=(index * 40, 0, 0)).save(tmp_path / label / f"{index}.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(InvalidInputError, match=r"not readable images: .*broken\.png"):
        folder_loaders(inspect_folder(tmp_path), None, 4, 0.25, 0)


def test_a_sqlite_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("a file where the folder should be")
    with pytest.raises(InvalidInputError, match="cannot create the folder of the SQLite"):
        open_storage(f"sqlite:///{tmp_path / 'file' / 'sub' / 'study.db'}")

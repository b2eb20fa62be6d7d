"""Your own data on the command line: an image folder (both layouts), `module:function`, and
each bad input refused with its own message before any model is trained or study opened."""

import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from autoprune.cli import main
from autoprune.errors import InvalidInputError
from autoprune.integrations.user_data import (folder_loaders, function_loaders, inspect_folder,
                                              is_function_spec)


def write_digit_images(root, classes=(0, 1, 2), per_class=12, start=0):
    """PNGs of scikit-learn's digits under root/<class>/, as a user's folder would hold."""
    digits = load_digits()
    for label in classes:
        folder = root / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        images = digits.images[digits.target == label][start:start + per_class]
        for index, image in enumerate(images):
            pixels = (image * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").resize((16, 16)).save(folder / f"{index}.png")


def no_study_under(path):
    return not list(path.rglob("study.db"))


def run_search(tmp_path, data, *extra):
    return main(["-q", "search", "--model", "test_resnet", "--data", str(data), "--image-size", "32",
                 "--trials", "2", "--finetune-steps", "2", "--train-epochs", "1",
                 "--batch-size", "8", "--threads", "1", "--output-dir", str(tmp_path / "out"),
                 "--study-name", "mine", "--early-stop-margin", "off", *extra])


def test_a_search_runs_end_to_end_on_an_image_folder_from_the_cli(tmp_path):
    write_digit_images(tmp_path / "images" / "train")
    write_digit_images(tmp_path / "images" / "val", per_class=6, start=12)
    assert run_search(tmp_path, tmp_path / "images") == 0
    import optuna

    study = optuna.load_study(study_name="mine",
                              storage=f"sqlite:///{tmp_path / 'out' / 'mine' / 'study.db'}")
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 2
    assert study.user_attrs["settings"]["data"]["val_samples"] == 18
    cached = list((tmp_path / "out" / "models").glob("test_resnet-images-*-32px-1ep.json"))
    assert len(cached) == 1 and '"num_classes": 3' in cached[0].read_text()


def test_one_folder_is_split_by_the_validation_fraction_stratified(tmp_path):
    write_digit_images(tmp_path, per_class=10)
    layout = inspect_folder(tmp_path)
    assert layout.classes == ["digit0", "digit1", "digit2"] and layout.val_dir is None
    train, val = folder_loaders(layout, lambda image: np.asarray(image).mean(), 4, 0.2, seed=0)
    assert len(train.dataset) == 24 and len(val.dataset) == 6
    assert sorted(train.dataset.dataset.targets[i] for i in val.dataset.indices) == [0, 0, 1, 1,
                                                                                    2, 2]


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "no such directory"),
    (lambda root: root.mkdir(), "no class folders"),
    (lambda root: (write_digit_images(root), (root / "digit9").mkdir()),
     "digit9 holds no images"),
    (lambda root: (write_digit_images(root / "train"), write_digit_images(root / "val", (0, 1, 3))),
     "only in train/: digit2; only in val/: digit3"),
    (lambda root: write_digit_images(root, classes=(4,)), "at least two"),
])
def test_a_bad_image_folder_is_refused_by_name_before_any_work(tmp_path, capsys, make, message):
    root = tmp_path / "images"
    make(root)
    assert run_search(tmp_path, root) == 2
    assert message in capsys.readouterr().err
    assert no_study_under(tmp_path) and not (tmp_path / "out" / "models").exists()


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module in the current directory, as `--data my_data:loaders` would import it."""
    (tmp_path / "my_data.py").write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        def loaders():
            torch.manual_seed(0)
            images, labels = torch.randn(48, 3, 32, 32), torch.arange(48) % 3
            data = TensorDataset(images, labels)
            return DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=8)

        def one_loader():
            return DataLoader(TensorDataset(torch.randn(8, 3), torch.zeros(8)))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_data", raising=False)
    yield
    sys.modules.pop("my_data", None)


def test_module_function_data_runs_a_search_from_the_cli(tmp_path, user_module):
    assert is_function_spec("my_data:loaders") and not is_function_spec("C:/data")
    assert run_search(tmp_path, "my_data:loaders") == 0
    assert list((tmp_path / "out" / "models").glob("test_resnet-my_data.loaders-1ep.json"))


@pytest.mark.parametrize("spec, message", [
    ("my_data:one_loader", "must return (train_loader, val_loader), got a DataLoader"),
    ("my_data:missing", "has no function 'missing'"),
    ("not_a_module_here:loaders", "cannot import module 'not_a_module_here'"),
])
def test_a_bad_data_function_is_refused_before_any_work(tmp_path, user_module, spec, message):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        function_loaders(spec)
    assert run_search(tmp_path, spec) == 2 and no_study_under(tmp_path)


def test_the_benchmark_refuses_data_that_is_not_bundled(tmp_path, capsys):
    assert main(["bench", "--data", str(tmp_path), "--output-dir", str(tmp_path)]) == 2
    assert "bundled tasks" in capsys.readouterr().err

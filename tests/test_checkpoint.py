import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import TinyResNet

from autoprune.errors import CheckpointError
from autoprune.pruning.grouping import ignored_modules, plan_dimensions
from autoprune.pruning.prune import prune_copy
from autoprune.store.checkpoint import (ARCHITECTURE_FILE, WEIGHTS_FILE, load_checkpoint,
                                        save_checkpoint)

EXAMPLE = torch.randn(4, 3, 8, 8)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = TinyResNet().eval()
    dims = plan_dimensions(model, EXAMPLE, None, ignored=ignored_modules(model, EXAMPLE, []))
    pruned = prune_copy(model, EXAMPLE, dims, {d.name: 0.5 for d in dims}, "l1", ["fc"])
    pruned.model.eval()
    directory = save_checkpoint(tmp_path / "ckpt", pruned.model, model, pruned.history, EXAMPLE)
    return directory, pruned.model


FRESH_PROCESS = """
import sys, torch
sys.path.insert(0, {tests!r})
from safetensors.torch import load_file, save_file
from autoprune import load_checkpoint
from tiny_models import TinyResNet
model = load_checkpoint({ckpt!r}, TinyResNet())
x = load_file({io!r})["x"]
save_file({{"y": model(x)}}, {out!r})
"""


def test_round_trip_in_a_fresh_process_gives_identical_outputs(saved, tmp_path):
    directory, pruned = saved
    io, out = tmp_path / "x.safetensors", tmp_path / "y.safetensors"
    save_file({"x": EXAMPLE}, io)
    code = FRESH_PROCESS.format(tests=str(Path(__file__).parent), ckpt=str(directory),
                                io=str(io), out=str(out))
    subprocess.run([sys.executable, "-c", code], check=True)
    from safetensors.torch import load_file
    with torch.no_grad():
        assert torch.equal(load_file(out)["y"], pruned(EXAMPLE))


def test_checkpoint_is_plain_data(saved):
    directory, _ = saved
    description = json.loads((directory / ARCHITECTURE_FILE).read_text())
    assert description["pruning_history"] and description["weights_sha256"]
    assert sorted(p.name for p in directory.iterdir()) == [ARCHITECTURE_FILE, WEIGHTS_FILE]


def test_truncated_weights_are_refused_naming_the_file(saved):
    directory, _ = saved
    weights = directory / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or was changed") as error:
        load_checkpoint(directory, TinyResNet())
    assert str(weights) in str(error.value)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/autoprune-pickle-ran"),))


def test_a_pickle_in_place_of_the_weights_never_runs(saved, tmp_path):
    directory, _ = saved
    marker = Path("/tmp/autoprune-pickle-ran")
    marker.unlink(missing_ok=True)
    (directory / WEIGHTS_FILE).write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(directory, TinyResNet())
    assert not marker.exists()


def test_base_model_of_another_class_is_refused(saved):
    directory, _ = saved
    with pytest.raises(CheckpointError, match="pruned from a .*TinyResNet"):
        load_checkpoint(directory, torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_base_model_of_another_width_is_refused(saved):
    directory, _ = saved
    with pytest.raises(CheckpointError, match="does not fit|cannot load"):
        load_checkpoint(directory, TinyResNet(width=4))


def test_missing_description_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no architecture description"):
        load_checkpoint(tmp_path, TinyResNet())

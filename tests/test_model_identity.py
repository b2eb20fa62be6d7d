"""Never a wrong model: what is loaded is what the study recorded, or a clear refusal.

Two studies of one name in one folder, a stale or tampered cache, a tampered artifact store,
a checkpoint of another study, and trial numbers that do not exist.
"""

import json
import logging
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_model
from tiny_models import QUICK, TinyResNet, tiny_data

import autoprune
from autoprune.errors import CheckpointError, InvalidInputError
from autoprune.results.result import SearchResult
from autoprune.runtime.evaluate import evaluate
from autoprune.store.checkpoint import ARCHITECTURE_FILE, WEIGHTS_FILE
from autoprune.store.records import TrialRecord


def _search(tmp_path, storage_name, seed, name="run", trials=4):
    train, val = tiny_data()
    torch.manual_seed(seed)
    model = TinyResNet()
    result = autoprune.search(model, trials=trials, train=train, val=val, finetune_steps=3,
                              options=QUICK, storage=f"sqlite:///{tmp_path / storage_name}",
                              study_name=name, output_dir=tmp_path / "reports", verbose=False,
                              write_report=False, threads=1, seed=seed)
    return result, model, val


def _reloads_exactly(result, val):
    assert result.pareto
    for candidate in result.pareto:
        assert evaluate(result.load(candidate), val, "cpu") == candidate.accuracy, candidate


def _first_weights(model):
    return next(iter(model.state_dict().values())).clone()


def test_two_studies_of_one_name_in_one_folder_each_reload_their_own_models(tmp_path, caplog):
    first, first_model, val = _search(tmp_path, "first.db", seed=1)
    _reloads_exactly(first, val)  # fills the first study's local cache
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        second, second_model, _ = _search(tmp_path, "second.db", seed=2)
    _reloads_exactly(second, val)
    _reloads_exactly(first, val)
    shared = {c.trial for c in first.pareto} & {c.trial for c in second.pareto}
    for number in shared:  # the same trial number, another study's weights
        assert not torch.equal(_first_weights(first.load(number)),
                               _first_weights(second.load(number)))
    assert shared
    # and again through the storages, as `autoprune export` opens them
    for db, model in (("first.db", first_model), ("second.db", second_model)):
        reopened = SearchResult.from_storage("run", f"sqlite:///{tmp_path / db}",
                                             base_model=model, output_dir=tmp_path / "reports")
        _reloads_exactly(reopened, val)
    assert "holds the files of another study named 'run'" in caplog.text
    folders = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert folders[0] == "run" and len(folders) == 2 and folders[1].startswith("run-")
    assert (tmp_path / "reports" / "run" / "artifacts").is_dir()  # nothing of the first deleted


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("identity")
    result, model, val = _search(tmp_path, "study.db", seed=3)
    return result, val


def test_a_stale_cache_folder_with_other_weights_is_replaced(searched):
    result, val = searched
    number = result.pareto[0].trial
    folder = result.checkpoint_path(number)
    wrong = result.load(number)
    with torch.no_grad():
        for parameter in wrong.parameters():
            parameter.add_(1.0)
    save_model(wrong, str(folder / WEIGHTS_FILE))  # a folder that is consistent but wrong
    description = json.loads((folder / ARCHITECTURE_FILE).read_text())
    from autoprune.store.checkpoint import file_sha256
    description["weights_sha256"] = file_sha256(folder / WEIGHTS_FILE)
    (folder / ARCHITECTURE_FILE).write_text(json.dumps(description))
    _reloads_exactly(result, val)
    assert not torch.equal(_first_weights(result.load(number)), _first_weights(wrong))


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / ".unpickled-marker",))


def test_a_tampered_checkpoint_in_the_artifact_store_is_refused_never_unpickled(searched,
                                                                                  tmp_path):
    result, _ = searched
    number = result.pareto[-1].trial
    trial = result.study.get_trials(deepcopy=False)[number]
    weights_id = TrialRecord.of(trial).checkpoint_artifacts[WEIGHTS_FILE]
    stored = Path(result.study.user_attrs["settings"]["artifacts"]) / weights_id
    original = stored.read_bytes()
    marker = Path(__file__).parent / ".unpickled-marker"
    marker.unlink(missing_ok=True)
    try:
        stored.write_bytes(pickle.dumps({"state_dict": _Payload()}))
        result.cache_dir = tmp_path / "fresh-cache"  # another machine: nothing cached
        with pytest.raises(CheckpointError, match=f"trial {number}'s checkpoint in the artifact "
                                                  "store is not the one the study recorded"):
            result.load(number)
        with pytest.raises(CheckpointError, match="not the one the study recorded"):
            result.export(number, tmp_path / "model.onnx", format="onnx")
        assert not marker.exists()
    finally:
        stored.write_bytes(original)


def test_a_checkpoint_of_another_study_is_refused(searched, tmp_path):
    result, _ = searched
    number = result.pareto[0].trial
    folder = result.checkpoint_path(number)
    description = json.loads((folder / ARCHITECTURE_FILE).read_text())
    assert description["study_uid"] == result.uid and description["trial"] == number
    other = SearchResult(result.study, result.base_model, result.artifact_store, tmp_path / "c")
    other.uid = "0" * 32  # as if the record were another study's
    with pytest.raises(CheckpointError, match="belongs to study 'run'"):
        other.load(number)


@pytest.mark.parametrize("number", [-4, -1, 99])
def test_a_trial_number_that_does_not_exist_is_refused(searched, number, tmp_path):
    result, _ = searched
    for call in (lambda: result.load(number), lambda: result.checkpoint_path(number),
                 lambda: result.export(number, tmp_path / "m.safetensors"),
                 lambda: result.finetune(number, 1)):
        with pytest.raises(InvalidInputError, match=f"has no trial {number}"):
            call()


@pytest.mark.parametrize("name", ["../../escape", "a/b", "a\\b", "..", ""])
def test_a_study_name_that_leaves_the_output_folder_is_refused(tmp_path, name):
    train, val = tiny_data()
    with pytest.raises(InvalidInputError, match="study_name"):
        autoprune.search(TinyResNet(), trials=1, train=train, val=val, study_name=name,
                         output_dir=tmp_path / "reports", verbose=False, options=QUICK)
    assert not (tmp_path / "escape").exists() and not any(tmp_path.parent.glob("escape"))

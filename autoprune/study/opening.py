"""Open a study, or join one: the same model, space and limits, or a clear refusal.

The process that creates a study enqueues its reference trials (uniform pruning, warm starts)
once; any later process (a restart, a worker on another machine) joins it only when the search
it would run is the same one (`identity`), so results of different searches never mix.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from datetime import datetime

import optuna
import torch
import torch.nn as nn

from ..errors import InvalidInputError
from ..runtime.model_io import batch_size_of
from ..store.records import (DIRECTIONS, OBJECTIVE_NAMES, StudyRecord, TrialRecord, record_study,
                             trial_facts)
from .config import reference_params, uniform_params
from .prepared import PreparedModel
from .space import model_identifiers
from .warm_starts import derived_warm_starts


def default_study_name(model: nn.Module) -> str:
    return f"{model_identifiers(model)[0]}-{datetime.now():%Y%m%d-%H%M%S}"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's state (names, shapes and values): what "the same model" means."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def search_identity(prepared: PreparedModel, constraints: dict[str, float],
                    lm_timing: dict | None = None) -> dict:
    """What must be equal for two processes to add trials to one study; for a causal LM also
    what its latency times (`lm_timing`: a decode latency must not meet a generate one)."""
    model = prepared.model
    identity = {"model": f"{type(model).__module__}.{type(model).__qualname__} "
                         f"{model_identifiers(model)[0]}",
                "weights_sha256": model_fingerprint(model),
                "search_space": prepared.space.fingerprint(),
                "dimensions": [d.name for d in prepared.dimensions], "constraints": constraints,
                "device": prepared.device.type,
                "batch_size": batch_size_of(prepared.example_inputs)}
    if lm_timing is not None:
        identity["lm_timing"] = lm_timing
    return identity


def open_study(name: str, storage, sampler, metric_name: str = OBJECTIVE_NAMES[0],
               direction: str = DIRECTIONS[0]) -> tuple[optuna.Study, bool]:
    """The study and whether this call created it (only the creator enqueues references). Its
    first objective is the task's metric, in the metric's direction."""
    wanted = [direction, *DIRECTIONS[1:]]
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    directions=wanted)
        created = True
        record_study(study, uid=uuid.uuid4().hex)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        created = False
    directions = [d.name.lower() for d in study.directions]
    if directions[1:] != list(DIRECTIONS[1:]) or len(directions) != len(DIRECTIONS):
        raise InvalidInputError(f"study {name!r} exists in this storage but is not an autoprune "
                                f"study (directions {directions}); choose another study name")
    if directions[0] != direction:
        raise InvalidInputError(f"study {name!r} {directions[0]}s its metric; this search would "
                                f"{direction} it: use the same direction, or another study name")
    if study.metric_names is None:  # also studies started before autoprune named them
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric_name, *OBJECTIVE_NAMES[1:]])
    return study, created


def check_same_search(study: optuna.Study, identity: dict, where: str) -> None:
    """Refuse to add trials to a study that was started for another model or space."""
    stored = StudyRecord.of(study).identity
    if stored is None:
        record_study(study, identity=identity)
        return
    current = json.loads(json.dumps(identity))
    differing = [key for key in current if stored.get(key) != current[key]]
    if differing:
        raise InvalidInputError(
            f"study {study.study_name!r} in {where} was started by a different search: its "
            f"{', '.join(differing)} differ from this one's. Results of different searches must "
            "not mix: use another study name, or the same model, data and search space.")


def enqueue_references(study: optuna.Study, prepared: PreparedModel) -> None:
    """The family's uniform references, then its warm starts, before the sampler's trials."""
    space, dimensions = prepared.space, prepared.dimensions
    for ratio in space.uniform_ratios:
        study.enqueue_trial(uniform_params(space, dimensions, ratio),
                            user_attrs=trial_facts(reference=f"uniform {ratio:g}"))
    for ratios in space.warm_starts:
        study.enqueue_trial(reference_params(space, dimensions, ratios), user_attrs=trial_facts(
            reference="warm start: " + ", ".join(f"{kind} {ratio:g}"
                                                 for kind, ratio in ratios.items())))


def enqueue_derived_starts(study: optuna.Study, prepared: PreparedModel, latency_model,
                           count: int) -> None:
    """`count` derived warm starts (warm_starts.py), after the references: enqueued by the
    process that built the latency model they are read from."""
    space, dimensions = prepared.space, prepared.dimensions
    for speedup, ratios in derived_warm_starts(space, dimensions, latency_model, count):
        label = ", ".join(f"{kind} {ratio:g}" for kind, ratio in ratios.items())
        study.enqueue_trial(reference_params(space, dimensions, ratios), skip_if_exists=True,
                            user_attrs=trial_facts(
                                reference=f"derived start: {label} ({speedup:.1f}x predicted)"))


def requeue_interrupted(study: optuna.Study, numbers: list[int]) -> None:
    """Enqueue again, with the same parameters, the trials a Ctrl-C cut short (a promotion
    again as the same promotion)."""
    trials = study.get_trials(deepcopy=False)
    for number in numbers:
        record = TrialRecord.of(trials[number])
        promotion = {} if record.continues is None else dict(
            continues=record.continues, promoted_steps=record.promoted_steps)
        study.enqueue_trial(trials[number].params, skip_if_exists=False,
                            user_attrs=trial_facts(retry_of=number, **promotion))

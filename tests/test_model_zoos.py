"""Other projects' model zoos (tests/zoo_check.py): every torchvision classification family and
the timm models that used to fail either search and reload exactly, or are refused before
trial 1 in seconds with the reason; none takes the process past 4 GB resident. The README's
zoo table must say what this test finds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PEAK_MEMORY_MB = 4096  # resident, the process's earlier models included
HEAVY_PEAK_MEMORY_MB = 8192
REFUSAL_SECONDS = 60  # set-up checks, then at most 30 s of dependency analysis
HEAVY_REFUSAL_SECONDS = 180  # MaxViT at 224x224 on one thread: a minute of checks first


def readme_outcomes() -> dict[str, str]:
    text = (HERE.parent / "README.md").read_text()
    table = text.split("<!-- zoo table: tests/test_model_zoos.py -->", 1)[1].split("\n\n", 1)[0]
    return {match[0]: match[1] for match in re.findall(r"^\| `([\w:]+)` \| (\w+) \|", table, re.M)}


def run_zoo(models: list[str]) -> list[dict]:
    """The models tried in two processes side by side (one thread each: 2 cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    halves = [models[: (len(models) + 1) // 2], models[(len(models) + 1) // 2:]]
    processes = [subprocess.Popen([sys.executable, str(HERE / "zoo_check.py"), *half],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env=env) for half in halves]
    rows = []
    for process in processes:
        out, _ = process.communicate(timeout=1500)
        rows += [json.loads(line) for line in out.splitlines() if line.startswith('{"model"')]
    return rows


def check_zoo(models: dict[str, int], peak_memory_mb: int, refusal_seconds: int) -> None:
    expected = readme_outcomes()
    assert set(models) <= set(expected), f"not in the README's zoo table: {set(models) - set(expected)}"
    rows = {row["model"]: row for row in run_zoo(list(models))}
    assert set(rows) == set(models), f"no result for {set(models) - set(rows)}"
    for spec, row in rows.items():
        assert row["outcome"] in ("searched", "refused"), f"{spec}: {row}"
        assert row["peak_rss_mb"] < peak_memory_mb, f"{spec}: {row['peak_rss_mb']:.0f} MB"
        if row["outcome"] == "searched":
            assert row["reloaded_exactly"], f"{spec}: the reloaded model scores otherwise"
        else:
            assert row["seconds"] < refusal_seconds, f"{spec}: refused after {row['seconds']:.0f} s"
        assert row["outcome"] == expected[spec], f"{spec}: {row}; the README says {expected[spec]}"


@pytest.mark.slow
def test_the_zoo_models_that_failed_before_search_or_are_refused():
    sys.path.insert(0, str(HERE))
    from zoo_check import CI_MODELS, MODELS
    assert set(readme_outcomes()) == set(MODELS), "the README's zoo table lists other models"
    check_zoo(CI_MODELS, PEAK_MEMORY_MB, REFUSAL_SECONDS)


@pytest.mark.extended
def test_every_other_zoo_model_searches_or_is_refused():
    sys.path.insert(0, str(HERE))
    from zoo_check import EXTENDED_MODELS
    check_zoo(EXTENDED_MODELS, HEAVY_PEAK_MEMORY_MB, HEAVY_REFUSAL_SECONDS)


def test_the_zoo_covers_every_classification_family_torchvision_registers():
    """New torchvision releases add families: the zoo list must follow the registry."""
    import torchvision

    sys.path.insert(0, str(HERE))
    from zoo_check import MODELS

    def family(name: str) -> str:  # resnet18 -> resnet, wide_resnet50_2 -> wide, vgg11_bn -> vgg
        return re.sub(r"\d.*$", "", name.split("_")[0])

    registered = {family(name) for name in torchvision.models.list_models(module=torchvision.models)}
    tried = {family(spec.split(":", 1)[1]) for spec in MODELS if spec.startswith("torchvision:")}
    assert registered <= tried, f"families not in tests/zoo_check.py: {registered - tried}"

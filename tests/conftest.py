import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import TinyResNet, tiny_data  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture
def tiny_model():
    return TinyResNet().eval()


@pytest.fixture
def loaders():
    return tiny_data()


@pytest.fixture(autouse=True)
def quick_timing(request, monkeypatch):
    """Short latency timing for tiny models; the slow end-to-end tests time for real."""
    if request.node.get_closest_marker("slow") is None:
        import autoprune.study.runner

        monkeypatch.setattr(autoprune.study.runner, "LATENCY_MIN_RUN_TIME", 0.02)
        monkeypatch.setattr(autoprune.study.runner, "FINAL_ROUNDS", 2)

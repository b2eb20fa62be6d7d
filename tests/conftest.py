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

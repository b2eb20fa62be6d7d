import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import QUICK, TinyResNet, tiny_data  # noqa: E402

import autoprune  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture
def tiny_model():
    return TinyResNet().eval()


@pytest.fixture
def tiny_search(tmp_path):
    """`autoprune.search` of the tiny ResNet on tiny data, with quick timing, in `tmp_path`
    (study "s", no report, quiet, one thread); keyword arguments override any of these."""
    def run(model=None, loaders=None, **kwargs):
        train, val = loaders or tiny_data()
        settings = dict(trials=4, finetune_steps=3, output_dir=tmp_path, study_name="s",
                        verbose=False, write_report=False, threads=1, options=QUICK)
        settings.update(kwargs)
        return autoprune.search(model or TinyResNet(), train=train, val=val, **settings)

    return run

"""A search worker process for the fault-injection tests: `python worker.py URL STUDY N DIR`."""

import os
import signal
import sys

import torch

import autoprune
import autoprune.study.runner
from autoprune.store.storage import open_storage

from tiny_models import TinyResNet, tiny_data

url, study_name, trials, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# Ctrl-C as in a terminal, even when the test run was started in the background: a
# non-interactive shell starts background jobs with SIGINT ignored, and Python keeps that.
signal.signal(signal.SIGINT, signal.default_int_handler)
autoprune.study.runner.LATENCY_MIN_RUN_TIME = 0.02
autoprune.study.runner.FINAL_ROUNDS = 1
torch.manual_seed(0)  # every worker holds the same model
model = TinyResNet()
train, val = tiny_data()
autoprune.search(model, trials=trials, train=train, val=val, study_name=study_name,
                 storage=open_storage(url, heartbeat_interval=1, grace_period=3),
                 output_dir=out, artifacts=f"{out}/artifacts", finetune_steps=150, threads=1,
                 write_report=os.environ.get("WRITE_REPORT") == "1")

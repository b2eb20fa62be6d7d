"""A search worker process for the fault-injection tests: `python worker.py URL STUDY N DIR`.

150 fine-tuning steps per trial by default: long enough for a test to kill or interrupt a
worker in the middle of a trial; FINETUNE_STEPS sets fewer where no trial is cut short."""

import os
import signal
import sys

import torch
from tiny_models import TinyResNet, tiny_data

import autoprune
from autoprune.store.storage import open_storage
from autoprune.study.options import SearchOptions

url, study_name, trials, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# Ctrl-C as in a terminal, even when the test run was started in the background: a
# non-interactive shell starts background jobs with SIGINT ignored, and Python keeps that.
signal.signal(signal.SIGINT, signal.default_int_handler)
torch.manual_seed(0)  # every worker holds the same model
model = TinyResNet()
train, val = tiny_data()
autoprune.search(model, trials=trials, train=train, val=val, study_name=study_name,
                 storage=open_storage(url, heartbeat_interval=1, grace_period=3),
                 output_dir=out, artifacts=f"{out}/artifacts",
                 finetune_steps=int(os.environ.get("FINETUNE_STEPS", "150")), threads=1,
                 write_report=os.environ.get("WRITE_REPORT") == "1",
                 options=SearchOptions(latency_run_time=0.02, final_rounds=1,
                                       calibration_points=2, table_block_seconds=0.0005))

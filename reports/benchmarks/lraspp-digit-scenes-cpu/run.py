"""Segmentation through the task contract: LR-ASPP MobileNetV3-Large (torchvision, no
weights downloaded) trained on digit scenes, then searched for mean IoU against latency.

    python reports/benchmarks/lraspp-digit-scenes-cpu/run.py --train-epochs 12 --budget 8m

Prints the unpruned model and the front; writes the study and its report under reports/.
"""

import argparse
import time

import torch
import torch.nn.functional as F
import torchvision

import autoprune
from autoprune.integrations.example_tasks import (SEGMENTATION_CLASSES, pixel_distillation,
                                                  scenes_mean_iou, segmentation_loaders)

parser = argparse.ArgumentParser()
parser.add_argument("--train-epochs", type=int, default=12)
parser.add_argument("--budget", default="8m")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)

train, val = segmentation_loaders(train_scenes=1024, val_scenes=256, size=64, batch_size=16)
torch.manual_seed(0)
model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
    weights=None, weights_backbone=None, num_classes=SEGMENTATION_CLASSES)
miou = scenes_mean_iou(val)

start = time.perf_counter()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3,
                                               total_steps=args.train_epochs * len(train))
for epoch in range(args.train_epochs):
    model.train()
    for images, masks in train:
        loss = F.cross_entropy(model(images)["out"], masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, val mean IoU {miou(model):.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

result = autoprune.search(model.eval(), budget=args.budget, train=train, evaluate=miou,
                          distill=pixel_distillation, threads=args.threads,
                          study_name="lraspp-digit-scenes")
print("unpruned:", result.shown(result.baseline["accuracy"]),
      f"{result.baseline['latency_ms']:.2f} ms (in-search reference)")
for candidate in result.pareto:
    print(candidate)

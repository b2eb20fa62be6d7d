"""Tiny models and data for fast tests: a few thousand parameters, 8x8 inputs."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from autoprune.study.options import SearchOptions

# Timing effort for tiny models in quick tests; the slow end-to-end tests time for real.
# The tiny models are untrained and score near chance: the default front floor would empty
# their fronts at random, so tests go without it (test_search tests the floor itself).
QUICK = SearchOptions(latency_run_time=0.02, final_rounds=2, calibration_points=2,
                      table_block_seconds=0.0005, front_floor_share=None)


class Block(nn.Module):
    """A ResNet basic block: two 3x3 convolutions and an identity skip."""

    def __init__(self, width: int, inner: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, inner, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(out)))


class TinyResNet(nn.Module):
    """Stem, two stages of two residual blocks, and a linear classifier (~9k parameters)."""

    def __init__(self, width: int = 8, num_classes: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(Block(width, 2 * width), Block(width, 2 * width))
        self.down = nn.Conv2d(width, 2 * width, 1, stride=2, bias=False)
        self.layer2 = nn.Sequential(Block(2 * width, 4 * width), Block(2 * width, 4 * width))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.down(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def tiny_data(samples: int = 64, classes: int = 4, size: int = 8, batch_size: int = 16,
              seed: int = 0):
    """Train and val loaders of a learnable synthetic task: the class sets a channel's mean."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(samples) % classes
    images = torch.randn(samples, 3, size, size, generator=generator) * 0.5
    images[:, 0] += labels.view(-1, 1, 1).float() - classes / 2
    data = TensorDataset(images, labels)
    return (DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(data, batch_size=batch_size))


class TinyTransformer(nn.Module):
    """Patch embedding, one pre-norm transformer block (multi-head attention + MLP), a head."""

    def __init__(self, dim: int = 16, heads: int = 2, hidden: int = 32, num_classes: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)  # 8x8 image -> 4 tokens
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        normed = self.norm1(tokens)
        tokens = tokens + self.attn(normed, normed, normed, need_weights=False)[0]
        tokens = tokens + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(tokens))))
        return self.head(tokens.mean(dim=1))



class TinyConcatNet(nn.Module):
    """A user's own module: a grouped convolution, concatenated branches, depthwise-separable."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.branch_a = nn.Conv2d(32, 16, 1)
        self.branch_b = nn.Conv2d(32, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.bn = nn.BatchNorm2d(32)
        self.pointwise = nn.Conv2d(32, 24, 1)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        x = torch.relu(self.grouped(torch.relu(self.stem(x))))
        x = torch.cat([torch.relu(self.branch_a(x)), torch.relu(self.branch_b(x))], dim=1)
        x = torch.relu(self.bn(self.depthwise(x)))
        return self.head(torch.relu(self.pointwise(x)).mean(dim=(2, 3)))


class GroupedAfterConcat(nn.Module):
    """Concatenated branches feeding a grouped convolution's depthwise partner: Torch-Pruning
    cannot keep the grouped branch's width divisible by its groups, so pruning breaks it."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.branch_a = nn.Conv2d(16, 16, 1)
        self.branch_b = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        return self.head(torch.relu(self.depthwise(x)).mean(dim=(2, 3)))


class SplitStage(nn.Module):
    """CSPNet's cross stage in miniature: one convolution's output split into two fixed halves
    (`split(16)`), one half through a residual block, both concatenated again."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv_exp = nn.Conv2d(16, 32, 1)
        self.block = nn.Conv2d(16, 16, 3, padding=1)
        self.transition = nn.Conv2d(32, 32, 1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        kept, through = self.conv_exp(x).split(16, dim=1)
        through = through + torch.relu(self.block(through))
        x = torch.relu(self.transition(torch.cat([kept, through], 1)))
        return self.head(x.mean((2, 3)))

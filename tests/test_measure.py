import torch
import torch.nn as nn
from tiny_models import TinyResNet

from autoprune.runtime.measure import (interleaved_latency_ms, measure, paired_latency,
                                       weight_bytes)
from autoprune.targets import get_target

CPU = get_target("cpu", "cpu", threads=1)


def activation_peak_bytes(model, x):
    return CPU.activation_peak_bytes(model, x)


def test_weight_bytes_count_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20))
    expected = (10 * 20 + 20 + 20 + 20) * 4 + (20 + 20) * 4 + 8  # BN running stats + counter
    assert weight_bytes(model) == expected


def test_cpu_activation_peak_sees_tensors_alive_at_once():
    class TwoBranches(nn.Module):
        def forward(self, x):
            a = x * 2          # 4 KiB
            b = x + 1          # 4 KiB, while a is alive
            return a + b       # 4 KiB, while a and b are alive

    x = torch.zeros(1024)
    assert activation_peak_bytes(TwoBranches(), x) == 3 * 4096


def test_cpu_activation_peak_releases_freed_tensors():
    chain = nn.Sequential(*[nn.ReLU() for _ in range(10)])  # not in place: each frees the last
    peak = activation_peak_bytes(chain, torch.zeros(1024))
    assert 4096 <= peak <= 2 * 4096


def test_measure_reports_the_figures_users_compare():
    model = TinyResNet().eval()
    figures = measure(model, torch.randn(8, 3, 8, 8), CPU, rounds=3, block_seconds=0.01)
    assert figures.latency_ms > 0
    assert figures.params == sum(p.numel() for p in model.parameters())
    assert figures.macs > figures.params
    assert figures.memory_mb == figures.weights_mb + figures.activations_mb
    assert figures.activations_mb > 0


def test_interleaved_latency_orders_a_bigger_model_after_a_smaller_one():
    small, big = nn.Linear(64, 64), nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)])
    x_small = torch.randn(64, 64)
    result = interleaved_latency_ms({"small": small, "big": nn.Sequential(nn.Linear(64, 512), big)},
                                    x_small, CPU, rounds=3, block_seconds=0.01)
    assert result["small"] < result["big"]


def test_paired_latency_gives_the_speedup_of_a_smaller_model_over_its_reference():
    small = nn.Sequential(nn.Linear(64, 64))
    big = nn.Sequential(*[nn.Linear(64, 64) for _ in range(16)])
    paired = paired_latency(small, big, torch.randn(256, 64), CPU, rounds=5, block_seconds=0.005)
    assert paired.speedup > 2  # sixteen layers against one
    assert paired.rounds == 5 and paired.speedup_spread >= 0
    assert paired.reference_ms > paired.model_ms


def test_paired_latency_leaves_the_callers_thread_count_alone():
    before = torch.get_num_threads()
    paired_latency(nn.Linear(8, 8), nn.Linear(8, 8), torch.randn(4, 8),
                   get_target("cpu", "cpu", threads=1), rounds=2, block_seconds=0.001)
    assert torch.get_num_threads() == before


def test_the_final_re_timing_gives_each_model_its_median_speedup_over_the_reference():
    from autoprune.runtime.measure import interleaved_against_reference

    small = nn.Sequential(nn.Linear(64, 64))
    big = nn.Sequential(*[nn.Linear(64, 64) for _ in range(16)])
    result = interleaved_against_reference({"7": small}, big, torch.randn(256, 64), CPU,
                                           rounds=5, block_seconds=0.005)
    assert set(result) == {"reference", "7"}
    assert result["reference"] / result["7"] > 2  # sixteen layers against one

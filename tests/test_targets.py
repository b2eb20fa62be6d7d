import pytest
import torch
import torch.nn as nn

from autoprune.errors import InvalidInputError
from autoprune.targets import TARGETS, Target, get_target, register_target


def test_the_registry_refuses_an_unknown_target_and_lists_the_known_ones():
    with pytest.raises(InvalidInputError) as err:
        get_target("tpu-v9", "cpu")
    assert "unknown target 'tpu-v9'" in str(err.value)
    for name in ("cpu", "cuda"):
        assert name in str(err.value)


def test_a_target_refuses_a_device_it_does_not_run_on():
    with pytest.raises(InvalidInputError, match="runs on cuda"):
        get_target("cuda", "cpu")


def test_the_default_target_is_pytorch_eager_on_the_devices_type():
    target = get_target(None, "cpu", threads=1)
    assert target.name == "cpu" and target.threads == 1


def test_a_new_target_registers_and_is_timed_through_its_own_runnable():
    calls = []

    class Counting(Target):
        name, description = "counting-test", "counts its calls"

        def runnable(self, model, inputs):
            def run():
                calls.append(1)
                return model(inputs)
            return run

    register_target(Counting)
    try:
        target = get_target("counting-test", "cpu", threads=1)
        samples = target.time_interleaved(
            {"a": target.runnable(nn.Linear(4, 4).eval(), torch.randn(2, 4))}, rounds=3,
            block_seconds=0.0001)
        assert len(samples["a"]) == 3 and all(ms > 0 for ms in samples["a"])
        assert len(calls) >= 3 + 2  # every round, after the warm-up
        with pytest.raises(ValueError, match="already registered"):
            register_target(Counting)
    finally:
        del TARGETS["counting-test"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_graph_keeps_the_model_and_inputs_it_replays_alive():
    import gc

    def runnable():  # the model and its input go out of scope here, as in the latency table
        layer = torch.nn.Conv2d(64, 64, 3, padding=1).cuda().eval()
        return get_target("cuda", "cuda").runnable(layer, torch.randn(32, 64, 32, 32, device="cuda"))

    run = runnable()
    gc.collect()
    torch.cuda.empty_cache()  # what was freed goes back to the driver
    filler = [torch.empty(2 ** 24, device="cuda") for _ in range(8)]  # and is reused
    for _ in range(3):
        run()
    torch.cuda.synchronize()  # an illegal memory access surfaces here
    del filler

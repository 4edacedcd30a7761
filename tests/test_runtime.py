"""Device and dtype choice (with the reason printed), the CPU allocator setting, and
the FLOPs-per-token formula behind MFU, checked against PyTorch's own FLOP counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scratchlm.model import GPT
from scratchlm.model.gpt import GPTConfig
from scratchlm.train import flops, runtime


@pytest.fixture
def cpu_flags(monkeypatch):
    def set_flags(has_bf16: bool):
        monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: has_bf16)
    return set_flags


def test_auto_bf16_on_capable_cpu(cpu_flags):
    cpu_flags(True)
    dtype, why = runtime.pick_dtype("auto", torch.device("cpu"))
    assert dtype == "bf16" and "bf16" in why


def test_auto_fp32_without_native_bf16(cpu_flags):
    cpu_flags(False)
    dtype, why = runtime.pick_dtype("auto", torch.device("cpu"))
    assert dtype == "fp32" and "no fast half precision" in why


def test_explicit_choice_is_kept_and_warned(cpu_flags):
    cpu_flags(False)
    dtype, why = runtime.pick_dtype("bf16", torch.device("cpu"))
    assert dtype == "bf16" and "slow" in why
    assert runtime.pick_dtype("fp32", torch.device("cpu")) == ("fp32", "chosen with --train.dtype")


def test_cuda_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.pick_dtype("auto", torch.device("cuda", 0))[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    dtype, why = runtime.pick_dtype("auto", torch.device("cuda", 0))
    assert dtype == "fp16" and "scaler" in why


def test_autocast_context():
    rt = runtime.Runtime(torch.device("cpu"), "", "bf16", "")
    with rt.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    rt32 = runtime.Runtime(torch.device("cpu"), "", "fp32", "")
    with rt32.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_allocator_tuning_is_idempotent():
    first = runtime.tune_cpu_allocator()
    assert runtime.tune_cpu_allocator() in ("already tuned", first)
    x = torch.randn(4096, 4096)  # large allocations still work
    assert torch.isfinite((x + x).sum())


def test_flops_per_token_matches_flop_counter():
    """6N + 12·L·C·T against the FLOPs PyTorch counts in one forward + backward."""
    cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=64)
    model = GPT(cfg)
    for block in model.transformer.h:
        block.attn.fast = False  # written-out attention: its matmuls are visible to the counter
    x = torch.randint(0, 256, (2, 64))
    with FlopCounterMode(display=False) as counter:
        model(x, x)[1].backward()
    counted = counter.get_total_flops() / x.numel()
    formula = flops.flops_per_token(cfg, model.num_params())
    # N includes biases and LayerNorm gains, which do no matmuls: a 1-2% overcount here
    assert 0 <= formula - counted < 0.03 * counted, (formula, counted)


def test_mfu_and_hint():
    assert flops.mfu(1000, 1e6, 1e10) == pytest.approx(0.1)
    assert flops.mfu_hint(0.5, "cpu") is None
    assert "bf16" in flops.mfu_hint(0.05, "cpu")


def test_cpu_peak_is_measured_and_gpu_table():
    peak, source = flops.peak_flops(torch.device("cpu"), "fp32")
    assert peak > 1e8 and "measured" in source
    assert any(name == "H100" for name, *_ in flops.GPU_PEAK_TFLOPS)

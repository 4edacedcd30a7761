"""Where and how to compute: device, precision, threads, and distributed set-up.

Every choice comes with a reason string, printed at start so the user learns why.
Launched by `torchrun`, the environment holds RANK / LOCAL_RANK / WORLD_SIZE and we
join a process group: NCCL between GPUs, gloo between CPU processes.
"""

from __future__ import annotations

import os
import platform
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: torch.device
    device_reason: str
    dtype: str  # bf16 | fp16 | fp32
    dtype_reason: str
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self):
        """Mixed precision: matmuls in bf16/fp16, weights and optimizer state stay fp32."""
        if self.dtype == "fp32":
            return nullcontext()
        dt = torch.bfloat16 if self.dtype == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dt)


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def pick_device(name: str, local_rank: int = 0) -> tuple[torch.device, str]:
    if name != "auto":
        return torch.device(name), "chosen with --train.device"
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank), f"CUDA GPU found ({torch.cuda.get_device_name(local_rank)})"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps"), "Apple GPU (MPS) found"
    return torch.device("cpu"), "no GPU found"


def pick_dtype(name: str, device: torch.device) -> tuple[str, str]:
    if name != "auto":
        if name == "bf16" and device.type == "cpu" and not cpu_has_bf16():
            return name, "chosen with --train.dtype (this CPU has no native bf16: expect it to be slow)"
        return name, "chosen with --train.dtype"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "GPU supports bf16: half the memory traffic, fp32's range, no loss scaling"
        return "fp16", "GPU lacks bf16: fp16 autocast with a gradient scaler"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16", "CPU has native bf16 matmuls (AVX512-BF16/AMX): several times faster than fp32"
    return "fp32", f"no fast half precision on this {device.type} ({platform.machine()})"


def set_threads(threads: int) -> int:
    if threads <= 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = max(1, threads // world)  # processes on one machine share its cores
    torch.set_num_threads(threads)
    return threads


def setup_runtime(tc) -> Runtime:
    """Device, dtype and (under torchrun) the process group."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device, why_dev = pick_device(tc.device, local_rank)
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        why_dev += f"; rank {rank} of {world} ({dist.get_backend()})"
    dtype, why_dt = pick_dtype(tc.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, why_dev, dtype, why_dt, rank, local_rank, world)


def all_reduce_sum(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def teardown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()

"""Where and how to compute: device, precision, threads, and distributed set-up.

Every choice comes with a reason string, printed at start so the user learns why.
`StopRequested` turns Ctrl-C and SIGTERM into "finish the step, then stop".
Launched by `torchrun`, the environment holds RANK / LOCAL_RANK / WORLD_SIZE and we
join a process group: NCCL between GPUs, gloo between CPU processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import signal
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ScratchLMError


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


class StopRequested:
    """First Ctrl-C / SIGTERM: finish the step, checkpoint, exit. Second: exit at once."""

    def __init__(self, on_request=lambda: None):
        self.requested = False
        self.on_request = on_request
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt  # second signal: stop now (checkpoints are atomic)
        self.requested = True
        self.on_request()

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def pick_device(name: str, local_rank: int = 0) -> tuple[torch.device, str]:
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ScratchLMError(f"--train.device {name!r} is not a device (auto, cpu, cuda, cuda:N or mps)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ScratchLMError(f"--train.device {name}: no CUDA GPU is available here; "
                                 "use --train.device auto or cpu")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ScratchLMError(f"--train.device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                                 f"numbered from 0")
        mps = getattr(torch.backends, "mps", None)
        if device.type == "mps" and not (mps and mps.is_available()):
            raise ScratchLMError(f"--train.device {name}: no Apple GPU (MPS) is available here; use auto or cpu")
        if device.type not in ("cpu", "cuda", "mps"):
            raise ScratchLMError(f"--train.device {name}: scratchlm trains on cpu, cuda or mps")
        return device, "chosen with --train.device"
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


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> str:
    """Keep freed memory in the process instead of giving it back to the OS at once.

    glibc serves allocations above ~32 MB with fresh mmap() pages and returns them
    with munmap() on free. A training step allocates and frees activations of tens
    of MB hundreds of times, and every fresh page costs a page fault when first
    written: on a 2-core machine we measured elementwise ops (add, casts) running
    3-5× slower than the memory bandwidth allows. Turning mmap off for the heap
    (M_MMAP_MAX=0) and never trimming it (M_TRIM_THRESHOLD) makes freed blocks
    reusable, like the caching allocator PyTorch uses on GPUs. Process-wide and
    idempotent; a no-op where the C library is not glibc.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return "already tuned"
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or not name:
        return "not glibc: left alone"
    try:
        libc = ctypes.CDLL(name)
        M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # from <malloc.h>
        ok = (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
              and libc.mallopt(M_TOP_PAD, 64 << 20))
    except (OSError, AttributeError):
        return "mallopt unavailable: left alone"
    _ALLOCATOR_TUNED = bool(ok)
    return "freed memory kept for reuse (no per-op page faults)" if ok else "mallopt refused: left alone"


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
    if device.type == "cpu":
        tune_cpu_allocator()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, why_dev, dtype, why_dt, rank, local_rank, world)


def all_reduce_sum(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flags: list[bool], rt: Runtime) -> list[bool]:
    """Each flag becomes True on every rank if it is True on any rank (one tiny all-reduce)."""
    if not rt.distributed:
        return flags
    t = torch.tensor(flags, dtype=torch.float32, device=rt.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def rank0_first(fn, rt: Runtime):
    """fn() on rank 0, then on the other ranks, which find rank 0's files in place (caches,
    the run folder) and only read them: no two processes write the same file. If rank 0
    fails, the others stop too instead of waiting for it forever."""
    if not rt.distributed:
        return fn()
    result, failed = None, None
    if rt.master:
        try:
            result = fn()
        except Exception as e:  # told to the other ranks first, then raised
            failed = e
    if any_rank([failed is not None], rt)[0]:  # also the barrier: the others wait here for rank 0
        if failed is not None:
            raise failed
        raise ScratchLMError("rank 0 could not prepare the run (its error is above)")
    return result if rt.master else fn()


def teardown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


# ---- FSDP (fully sharded data parallel) ----------------------------------------------
# Each rank keeps only 1/world of every parameter, gradient and AdamW moment; a block's
# full weights are gathered just before it runs and freed after. The model object is
# sharded in place, so the checkpoint helpers below gather full tensors for saving.


def fsdp_wrap(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    """Shard each transformer block, then the rest (embeddings, final LayerNorm, tied head)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # Mixed precision the FSDP way: gathered weights are cast to bf16/fp16 for compute,
    # gradients are reduced in fp32, and the sharded master weights stay fp32.
    if rt.dtype == "fp32":
        mp = MixedPrecisionPolicy()
    else:
        half = torch.bfloat16 if rt.dtype == "bf16" else torch.float16
        mp = MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32)
    for block in model.transformer.h:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def is_fsdp(model: torch.nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def fsdp_full_state(model: torch.nn.Module, optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state on CPU; a collective: every rank calls it.

    The optimizer state comes back in the ordinary `optimizer.state_dict()` layout
    (parameters numbered in group order), so a single process without FSDP loads it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=opts)
    if not optimizer.state:
        # Before the first step there is no state to gather. (PyTorch's helper would create
        # it by running a zero-gradient step, which advances AdamW's step count and so its
        # bias correction: the run would no longer match one without FSDP.)
        n = 0
        groups = []
        for g in optimizer.param_groups:
            settings = {k: v for k, v in g.items() if k != "params"}
            groups.append({**settings, "params": list(range(n, n + len(g["params"])))})
            n += len(g["params"])
        return msd, {"state": {}, "param_groups": groups}
    osd = get_optimizer_state_dict(model, optimizer, options=opts)
    if "param_groups" not in osd:  # with cpu_offload only rank 0 receives the full state
        return msd, {}
    index, groups = {}, []
    for g in osd["param_groups"]:
        ids = []
        for name in g["params"]:
            index[name] = len(index)
            ids.append(index[name])
        groups.append({**g, "params": ids})
    state = {index[name]: s for name, s in osd["state"].items()}
    return msd, {"state": state, "param_groups": groups}


def fsdp_load_state(model: torch.nn.Module, optimizer, model_sd: dict, optim_sd: dict) -> None:
    """Load full state (as written by `fsdp_full_state` or by a single process) into a sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, model_sd, options=opts)
    # our param groups hold the parameters in `make_optimizer`'s order (decay, no decay)
    order = [n for g in optimizer.param_groups for n in _names_of(model, g["params"])]
    by_id = dict(enumerate(order))
    fqn_sd = {"state": {by_id[int(i)]: s for i, s in optim_sd["state"].items()},
              "param_groups": [{**g, "params": [by_id[int(i)] for i in g["params"]]} for g in optim_sd["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, fqn_sd, options=opts)


def _names_of(model: torch.nn.Module, params) -> list[str]:
    name = {id(p): n for n, p in model.named_parameters()}
    return [name[id(p)] for p in params]

"""The machine a benchmark ran on, in one line: every figure is printed under it."""

from __future__ import annotations

import os
import platform
import time

import torch


def read_cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def describe_cpu() -> str:
    """e.g. 'cpu: AMD EPYC, 2 cores, torch 2.x (AVX2), avx512=no avx512_bf16=no amx=no: bf16 emulated'."""
    from jobs.runtime import count_cores, has_native_bf16, pick_precision  # noqa: PLC0415

    flags = read_cpu_flags()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    cpu = torch.device("cpu")
    native = has_native_bf16(cpu)
    yes = {True: "yes", False: "no"}
    return (
        f"cpu: {model}, {count_cores()} cores, {torch.get_num_threads()} threads, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}), avx512={yes['avx512f' in flags]} "
        f"avx512_bf16={yes['avx512_bf16' in flags]} amx={yes['amx_tile' in flags]}: bf16 "
        f"{'native' if native else 'emulated'}, precision auto = {pick_precision('auto', cpu)}"
    )


def describe_gpu() -> str:
    if not torch.cuda.is_available():
        return "gpu: none (torch.cuda.is_available() is False)"
    props = torch.cuda.get_device_properties(0)
    return (
        f"gpu: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, {props.total_memory / 2**30:.0f} GiB, "
        f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, bf16 "
        f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}, {os.cpu_count()} CPUs"
    )


def describe_versions() -> str:
    """e.g. 'versions: python 3.12.3, torch 2.11.0+cu130, torchvision 0.26.0+cu130, CUDA 13.0, cuDNN 91900'."""
    import torchvision  # noqa: PLC0415

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return (
        f"versions: python {platform.python_version()}, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, CUDA {torch.version.cuda or 'none (a CPU build)'}, cuDNN {cudnn or 'none'}"
    )


def describe_shm() -> str:
    """/dev/shm's size and free space: the DataLoader's workers hand their batches over through it."""
    from jobs.shared_memory import SHM, describe_bytes, read_shm_space  # noqa: PLC0415

    space = read_shm_space()
    if space is None:
        return f"{SHM}: none on this system (the DataLoader's workers use another way)"
    free, total = space
    return f"{SHM}: {describe_bytes(total)}, {describe_bytes(free)} free"


def measure_peak_gflops(precision: str, seconds: float = 0.3, n: int = 2048) -> float:
    """GFLOP/s of an n x n matmul in `precision` (fp32 or bf16) on this CPU's threads, measured now for about
    `seconds` after one warm-up: the machine's own peak for the forward's convolutions (oneDNN, AMX tiles where
    there are), never a constant of another machine. The fastest call counts: a shared machine's neighbours only
    ever slow a call down."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up: the kernel's first call, page faults
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9

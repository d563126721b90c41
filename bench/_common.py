"""Shared by the benchmarks: machine/version header, alternating timing, RESULTS.md appends."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def machine() -> str:
    gpu = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), " if torch.cuda.is_available() else ""
    cpu = platform.processor() or "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import transformers

    return (
        f"{gpu}{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, Python {platform.python_version()}"
    )


def synchronize(device="cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_tflops(dtype=torch.bfloat16, n: int = 2048, reps: int = 10, device="cpu") -> float:
    """Measured matmul throughput in `dtype`: the peak that MFU is reported against (on a GPU, 8192^2). A CPU
    without units for the dtype (bf16 on AVX2 runs ~100x slower than fp32) is measured on a smaller matmul."""
    n = 8192 if torch.device(device).type == "cuda" else n
    probe = torch.randn(256, 256, dtype=dtype, device=device)
    probe @ probe  # the first call sets up the kernel (oneDNN's JIT: it once made AMX bf16 look emulated)
    synchronize(device)
    t = time.perf_counter()
    probe @ probe
    synchronize(device)
    if 2 * 256**3 / (time.perf_counter() - t) < 2e10:  # under 0.02 TFLOP/s: emulated
        n, reps = 512, 2
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = 0.0
    for _ in range(3):
        synchronize(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e12)
    return best


def training_precision(choice: str, device="cpu") -> tuple[str, float]:
    """("bf16" or "fp32", its measured matmul peak): "auto" decides as `hlm train --precision auto` does (bf16
    where the hardware has units for it; an AVX2 CPU runs bf16 matmuls ~100x slower than fp32)."""
    from hybridlm.runtime import bf16_supported

    if choice == "auto":
        choice = "bf16" if bf16_supported(torch.device(device)) else "fp32"
    return choice, peak_tflops(torch.bfloat16 if choice == "bf16" else torch.float32, device=device)


def alternate(fns: dict, repeats: int = 5, warmup: int = 1, device="cpu") -> dict:
    """Median seconds per call of each fn, calls interleaved so machine noise hits all sides alike
    (on a GPU each call is timed to the end of its kernels)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            synchronize(device)
            t = time.perf_counter()
            fn()
            synchronize(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def append_results(title: str, table: list[str], notes: list[str] = ()):
    command = " ".join([Path(sys.executable).name] + [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    block = [
        f"## {title} — {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine()}",
        "",
        f"Command: `{command}`",
        "",
    ]
    block += table + [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    with open(RESULTS, "a") as f:
        f.write("\n".join(block) + "\n")
    print("\n".join(table))
    for n in notes:
        print("-", n)


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent
        ).stdout.strip()
    except OSError:
        return "?"

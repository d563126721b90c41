"""Where and how a process computes: the process group (torchrun), the device, the precision, and
the learning-rate schedule; shared by pretraining (`train`) and fine-tuning (`finetune`)."""

from __future__ import annotations

import contextlib
import math
import os

import torch

from hybridlm.errors import UserError


class Dist:
    """The process group from torchrun's environment, or a single process."""

    def __init__(self, device_pref: str = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device_pref, self.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over processes, on this process's device (NCCL reduces device tensors, gloo host ones)."""
        if self.world > 1:
            t = t.to(self.device, copy=True)
            torch.distributed.all_reduce(t)
        return t

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def rows(self, n: int) -> slice:
        """This process's share of a global batch of n rows (shares differ by one row at most when N does not
        divide n: a batch warm-up's sizes; the loss is normalised over the global batch either way)."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda":
        pref = f"cuda:{local_rank}"
    try:
        device = torch.device(pref)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {pref!r} (choose auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda, but this PyTorch has no CUDA device; use --device cpu (or install a CUDA build)"
        )
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {pref!r} is not supported (choose auto, cpu or cuda)")
    return device


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except Exception:
            return False
    return False


def autocast_for(precision: str, device: torch.device):
    use = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if not use:
        return contextlib.nullcontext(), "fp32"
    return torch.autocast(device.type, dtype=torch.bfloat16), "bf16"


def warmup_cosine(
    step: int, total: int, peak: float, warmup_fraction: float, min_ratio: float, cooldown_fraction: float = 0.0
) -> float:
    """Linear warmup to `peak`, cosine decay to min_ratio * peak, then an optional linear cooldown to 0."""
    warmup = max(1, round(warmup_fraction * total))
    cooldown = round(cooldown_fraction * total)
    floor = peak * min_ratio
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_end = total - cooldown
    if step >= decay_end:
        return floor * (total - step) / max(1, cooldown)
    progress = min(1.0, (step - warmup) / max(1, decay_end - warmup))
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def gpt_bert_schedule(
    step: int, total: int, peak: float, warmup_fraction: float, min_ratio: float, cooldown_fraction: float = 0.0
) -> float:
    """The schedule of GPT-BERT's and the 2025 diffusion winner's `cosine_schedule_with_warmup_cooldown` (a
    LambdaLR, read at the optimizer step's index): linear from 0 over int(warmup) steps, cosine over the whole
    run clipped at min_ratio, and in the last int(cooldown) steps linear from min_ratio to 0."""
    warmup, cooldown = int(total * warmup_fraction), int(total * cooldown_fraction)
    if step < warmup:
        return peak * float(step) / float(max(1, warmup))
    if step >= total - cooldown:
        return peak * min_ratio * float(total - step) / float(max(1, cooldown))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return peak * max(min_ratio, min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))

"""Atomic checkpoints: safetensors weights + optimizer, data position and RNG state.

RUN/checkpoints/step_000200/{model.safetensors, optimizer.pt, state.json, rng.pt} is written to a
temporary directory and renamed into place; RUN/checkpoints/latest names the newest complete one
and is itself replaced atomically, so a kill at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hybridlm.errors import UserError

CKPT_DIR = "checkpoints"


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict):
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(run_dir, step: int, model_state: dict, optimizer_state: dict, state: dict, keep: int = 2) -> Path:
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    final = root / name
    if final.exists():  # re-saving the same step (e.g. after a resume): keep the old until the new is in place
        old = root / f".old-{name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    pointer_tmp = root / f".latest-{os.getpid()}"
    pointer_tmp.write_text(name + "\n")
    os.replace(pointer_tmp, root / "latest")
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir) -> list[Path]:
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def latest_checkpoint(run_dir) -> Path | None:
    root = Path(run_dir) / CKPT_DIR
    pointer = root / "latest"
    if pointer.is_file():
        p = root / pointer.read_text().strip()
        if p.is_dir():
            return p
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def _corrupt(path: Path, why: str, run_dir) -> UserError:
    others = [p.name for p in list_checkpoints(run_dir) if p != path]
    fix = f"move it aside to use {others[-1]}" if others else "retrain, or restore it from a backup"
    return UserError(f"checkpoint {path} is corrupt ({why}); {fix}")


def load_weights(path: Path, run_dir=None) -> dict:
    f = path / "model.safetensors"
    if not f.is_file():
        raise _corrupt(path, "model.safetensors missing", run_dir or path.parent.parent)
    try:
        return load_file(str(f))
    except Exception as e:
        raise _corrupt(path, str(e).splitlines()[0][:120], run_dir or path.parent.parent) from None


def load_training_state(path: Path, run_dir) -> tuple[dict, dict, dict]:
    """(optimizer state, rng state, state.json) of a checkpoint, with a clear error if damaged."""
    try:
        state = json.loads((path / "state.json").read_text())
        optimizer = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=False)
    except FileNotFoundError as e:
        raise _corrupt(path, f"{Path(e.filename).name} missing", run_dir) from None
    except Exception as e:
        raise _corrupt(path, str(e).splitlines()[0][:120], run_dir) from None
    return optimizer, rng, state

"""Curricula and data selection over the training windows.

A difficulty score per training window orders the data; a pacing function g(step) gives the share of
the easiest windows a step may draw from (CLIMB, Martinez et al. 2023, after Wu et al. 2021's
"When do curricula work?"): each step's windows are drawn uniformly from the easiest
ceil(g(step) * n), seeded by (seed, step), so a batch is a pure function of (seed, step, scores),
whatever the number of processes, and a resumed run draws what it would have drawn.

Scores: `length` (words in the window), `unigram` (mean unigram surprisal of its tokens), or a file of
one score per window (a reference run's loss per window, `hlm score-windows`). `select_fraction`
keeps only the easiest share of the windows (with a reference run's loss: selection by a reference
model, cf. CoLoR-Filter, Brandfonbrener et al. 2024).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hybridlm.data import PackedTokens, load_unigram
from hybridlm.errors import UserError

PACINGS = ("linear", "quadratic", "root", "step", "exponential", "log", "none")
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_PACING = re.compile(rf"([a-z]+)(?::{_NUMBER},{_NUMBER})?")
STARTING_DIFFICULTY = 0.2  # the share of the data the first steps draw from (CLIMB's default)
GROWTH = 10.0  # the exponential and log pacings' rate constant (CLIMB's c)


def parse_pacing(text: str) -> tuple[str, float, float]:
    """NAME[:START,END] -> (name, start, end): the fractions of training where the pacing starts to
    grow and where it reaches all the data (default 0.1 and 0.7)."""
    m = _PACING.fullmatch(text)
    if not m or m.group(1) not in PACINGS:
        raise UserError(f"pacing {text!r} must be NAME[:START,END] with NAME one of {', '.join(PACINGS)}")
    start, end = (float(m.group(2)), float(m.group(3))) if m.group(2) else (0.1, 0.7)
    if not 0 <= start < end <= 1:
        raise UserError(f"pacing {text!r}: START and END are fractions of training with 0 <= START < END <= 1")
    return m.group(1), start, end


def pacing(name: str, total_steps: int, start: float, end: float, first: float = STARTING_DIFFICULTY):
    """g(step): the share of the easiest windows available at `step` (CLIMB's pacing functions)."""
    step_start, step_end = start * total_steps, end * total_steps
    span = max(1, int(step_end - step_start))
    grow = 1.0 - first

    def shape(x: float) -> float:  # x: steps since step_start, in 0..span and beyond
        if name == "linear":
            return grow * x / span
        if name == "quadratic":
            return grow * (x / span) ** 2
        if name == "root":
            return grow * (x / span) ** 0.5
        if name == "exponential":
            return grow * math.expm1(GROWTH * x / span) / math.expm1(GROWTH)
        # log: grow * (1 + log(x / span + e^-c) / c)
        return grow * (1 + math.log(x / span + math.exp(-GROWTH)) / GROWTH)

    def g(step: int) -> float:
        if name == "none":
            return 1.0
        if name == "step":
            return first if step < step_end else 1.0
        if step < step_start:
            return first
        return min(first + shape(step - step_start), 1.0)

    return g


def window_scores(score: str, data_dir, seq_len: int) -> np.ndarray:
    """One difficulty score per training window (higher: harder)."""
    windows = PackedTokens(data_dir, "train", seq_len)
    if score == "length":
        if not windows.has_words:
            raise UserError(f"{data_dir} was prepared without word counts, which --curriculum length needs; re-prepare")
        return windows.window_words.astype(np.float64)
    if score == "unigram":
        counts = load_unigram(data_dir).astype(np.float64) + 1.0
        surprisal = -np.log(counts / counts.sum())
        return np.concatenate(
            [surprisal[np.asarray(sh[: n * seq_len]).reshape(n, seq_len)].mean(1) for sh, n in _shards(windows)]
        )
    path = Path(score)
    if path.suffix != ".npy" or not path.is_file():
        raise UserError(f"--curriculum {score}: give length, unigram, or a .npy file of scores (hlm score-windows)")
    try:  # memory-mapped: a header that claims more values than the file holds is refused, never allocated
        scores = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"--curriculum {path}: not a readable .npy file ({str(e).splitlines()[0][:80]})") from None
    if (
        scores.shape != (windows.n_windows,)
        or not np.issubdtype(scores.dtype, np.number)
        or not np.isfinite(scores).all()
    ):
        raise UserError(
            f"--curriculum {path} holds {scores.shape} values, not one finite score per training window of "
            f"length {seq_len} ({windows.n_windows}); score them again: hlm score-windows --seq-len {seq_len}"
        )
    return np.array(scores, dtype=np.float64)


def _shards(windows: PackedTokens):
    return zip(windows.shards, np.diff(windows.cum).tolist())


class CurriculumSampler:
    """The windows of each step: the easiest share g(step) of the (selected) windows, drawn per step."""

    def __init__(self, scores: np.ndarray, pacing_spec: str, total_steps: int, select_fraction: float = 1.0):
        name, start, end = parse_pacing(pacing_spec)
        order = np.argsort(scores, kind="stable")  # easiest first; ties in window order
        self.order = order[: max(1, math.ceil(select_fraction * len(order)))]
        self.g = pacing(name, total_steps, start, end)

    def batch_windows(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        available = max(1, math.ceil(self.g(step) * len(self.order)))
        rng = np.random.default_rng([seed, step, 20231])
        return self.order[rng.integers(0, available, size=batch_size)]


@torch.no_grad()
def reference_losses(run, data_dir, seq_len: int, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """A run's mean loss on each training window (its objective's validation corruption, fixed draws)."""
    windows = PackedTokens(data_dir, "train", seq_len)
    objective, model = run.objective, run.model
    out = np.zeros(windows.n_windows)
    for lo in tqdm(range(0, windows.n_windows, batch_size), disable=not progress, desc="score windows"):
        ks = list(range(lo, min(lo + batch_size, windows.n_windows)))
        batch = objective.corrupt(windows.windows(ks), torch.Generator().manual_seed(lo), train=False)
        logits = model(batch.input_ids, batch.attention, logits=True).float()
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")
        counted = batch.loss_weights > 0
        out[ks] = ((ce * counted).sum(1) / counted.sum(1).clamp(min=1)).double().numpy()
    return out

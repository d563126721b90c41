"""Samplers of masked diffusion and block diffusion: how a canvas of <mask> tokens becomes text.

One loop (`denoise`) reveals the masked positions of a region (the whole answer, or one block of a
semi-autoregressive schedule) over `steps` rounds t = 1 -> 0 of the objective's noise schedule
alpha(t); p(x0 | x_t) is recomputed only for rows whose tokens changed (MDLM's cache, valid for
models without a time input), and every call is counted (network function evaluations, NFE).

- ancestral (MDLM): each masked token is revealed with probability (alpha_s - alpha_t) / (1 - alpha_t),
  drawn from p(x0 | x_t).
- remdm (ReMDM, Wang et al. 2025): ancestral plus remasking: a token this sampler revealed goes back
  to <mask> with probability sigma_t, and a masked one is revealed with (alpha_s - (1 - sigma_t) alpha_t)
  / (1 - alpha_t); sigma_t = min(eta, sigma_max) ("cap") or eta * sigma_max ("rescale"), sigma_max =
  min(1, (1 - alpha_s) / alpha_t). eta = 0 is ancestral, draw for draw.
- first-hitting (Zheng et al. 2024): one masked position chosen uniformly is revealed per call; for a
  time-agnostic model the exact reverse process in as many calls as tokens (`steps` is not used).
- confidence, margin, entropy (LLaDA's low-confidence remasking and its variants): every masked token
  is drawn, the share of the schedule with the highest p(drawn token) / top-two margin / lowest
  entropy is kept, the others stay masked.

Semi-autoregressive schedules cut the answer into blocks revealed left to right (`block_length` for
a diffusion run, LLaDA; always for block diffusion, whose finished blocks' keys and values are cached).
Categoricals are sampled in float64 after temperature, top-k, top-p and min-p (generate.filter_logits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hybridlm.errors import UserError

SAMPLERS = ("ancestral", "remdm", "first-hitting", "confidence", "margin", "entropy")
REMDM_SCHEDULES = ("cap", "rescale")
MAX_STEPS = 100_000  # network calls, new tokens: a bound that keeps a typo from running for ever


@dataclass(frozen=True)
class Sampling:
    """How to sample: the sampler and its knobs (the CLI's --sampler, --steps, --eta, ...)."""

    sampler: str = "confidence"
    steps: int = 32  # rounds in all (split evenly over semi-autoregressive blocks); not used by first-hitting
    eta: float = 0.0  # remdm: the remasking strength
    remdm_schedule: str = "cap"  # remdm: sigma_t = min(eta, sigma_max) (cap) or eta * sigma_max (rescale)
    block_length: int = 0  # diffusion: reveal the answer in blocks of this many tokens, left to right (LLaDA)
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def check(self) -> Sampling:
        """The one set of rules for these knobs (every command that samples asks it), named by their flags."""
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r} (choose one of: {', '.join(SAMPLERS)})")
        if self.remdm_schedule not in REMDM_SCHEDULES:
            raise UserError(f"unknown --remdm-schedule {self.remdm_schedule!r} (choose cap or rescale)")
        rules = (
            ("--steps", self.steps, 1 <= self.steps <= MAX_STEPS, f"in 1 ... {MAX_STEPS:,} (one network call each)"),
            ("--block-length", self.block_length, 0 <= self.block_length <= MAX_STEPS, f"in 0 ... {MAX_STEPS:,}"),
            ("--top-k", self.top_k, self.top_k >= 0, ">= 0 (0 = off)"),
            ("--temperature", self.temperature, 0 <= self.temperature < float("inf"), "finite and >= 0 (0 = greedy)"),
            ("--top-p", self.top_p, 0 < self.top_p <= 1, "in (0, 1]"),
            ("--min-p", self.min_p, 0 <= self.min_p <= 1, "in [0, 1] (0 = off)"),
            ("--eta", self.eta, 0 <= self.eta and (self.eta <= 1 or self.remdm_schedule == "cap"), "in [0, 1]"),
        )
        for flag, value, ok, want in rules:
            if not ok:
                raise UserError(f"{flag} must be {want} (got {value})")
        if self.eta and self.sampler != "remdm":
            raise UserError(f"--eta is remdm's remasking strength; the {self.sampler} sampler does not remask")
        return self

    @property
    def filters(self) -> dict:
        return dict(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p)


def _draw(probs: torch.Tensor, generator) -> torch.Tensor:
    """One token per row of probs [..., V] (float64)."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def _scores(sampler: str, probs: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """How sure the model is of each drawn token (higher: revealed first)."""
    if sampler == "confidence":
        return probs.gather(-1, drawn[..., None]).squeeze(-1)
    if sampler == "margin":
        top = probs.topk(2, -1).values
        return top[..., 0] - top[..., 1]
    return (probs * probs.clamp(min=1e-300).log()).sum(-1)  # entropy: minus it, lower entropy first


@torch.no_grad()
def denoise(
    predict: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    start: int,
    end: int,
    mask_id: int,
    sampling: Sampling,
    alpha: Callable[[float], float],
    generator: torch.Generator,
    steps: int,
    nfe: torch.Tensor,
) -> None:
    """Reveal the <mask> tokens of x[:, start:end] in place over `steps` rounds.

    predict(rows) -> probabilities [len(rows), end - start, V] (float64, filtered) at the region for
    those rows of x; nfe [N] counts each row's calls. Only positions masked on entry are ever
    remasked (a prompt is never changed)."""
    n = len(x)
    region = x[:, start:end]  # a view: writes reach x
    generated = region == mask_id
    probs = None
    stale = torch.ones(n, dtype=torch.bool)

    def refresh():
        """p(x0 | x_t) again for the rows that changed and still have a <mask> to fill."""
        nonlocal probs
        rows = (stale & (region == mask_id).any(1)).nonzero().flatten()
        if len(rows):
            fresh = predict(rows)
            if probs is None:
                probs = fresh.new_zeros((n, *fresh.shape[1:]))
            probs[rows] = fresh
            nfe[rows] += 1
            stale[rows] = False

    if sampling.sampler == "first-hitting":
        while True:
            masked = region == mask_id
            if not masked.any():
                return
            refresh()
            # one masked position per row, uniformly: the first to be hit going back in time
            pick = torch.where(masked, torch.rand(masked.shape, generator=generator), torch.full(masked.shape, -1.0))
            pos = pick.argmax(1)
            rows = masked.any(1).nonzero().flatten()
            region[rows, pos[rows]] = _draw(probs[rows, pos[rows]], generator)
            stale[rows] = True

    for s in range(steps, 0, -1):
        masked = region == mask_id
        if not masked.any() and (sampling.sampler != "remdm" or s == 1 or not sampling.eta):
            return
        t, t_next = s / steps, (s - 1) / steps
        a_t, a_s = alpha(t), alpha(t_next)
        refresh()
        drawn = _draw(probs, generator)
        if sampling.sampler in ("ancestral", "remdm"):
            sigma = 0.0
            if sampling.sampler == "remdm" and sampling.eta and a_t > 0:
                sigma_max = min(1.0, (1 - a_s) / a_t)
                sigma = min(sampling.eta, sigma_max) if sampling.remdm_schedule == "cap" else sampling.eta * sigma_max
            reveal_p = (a_s - (1 - sigma) * a_t) / max(1 - a_t, 1e-12)
            reveal = masked & (torch.rand(masked.shape, generator=generator, dtype=torch.float64) < reveal_p)
            if s == 1:
                reveal = masked  # alpha(0) = 1: everything is revealed at the end
            remask = torch.zeros_like(masked)
            if sigma > 0:
                remask = generated & ~masked & (torch.rand(masked.shape, generator=generator) < sigma)
        else:
            share = (a_s - a_t) / max(1 - a_t, 1e-12)
            counts = masked.sum(1)
            k = counts if s == 1 else torch.round(counts.double() * share).long()
            score = _scores(sampling.sampler, probs, drawn).masked_fill(~masked, float("-inf"))
            rank = score.argsort(1, descending=True).argsort(1)
            reveal = masked & (rank < k[:, None])
            remask = torch.zeros_like(masked)
        region[reveal] = drawn[reveal]
        region[remask] = mask_id
        stale |= (reveal | remask).any(1)


def region_steps(total_steps: int, regions: int) -> int:
    """Rounds per semi-autoregressive region: the total split evenly, at least one each."""
    return max(1, total_steps // max(regions, 1))

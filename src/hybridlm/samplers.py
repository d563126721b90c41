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
- first: the same schedule, revealed left to right (the leftmost masked positions first).

Semi-autoregressive schedules cut the answer into blocks revealed left to right (`block_length` for
a diffusion run, LLaDA; always for block diffusion, whose finished blocks' keys and values are cached).
Categoricals are sampled in float64 after temperature, top-k, top-p and min-p (`filter_probs`); the
confidence samplers rank by the model's own probabilities, as LLaDA does (at temperature 0 too).

Fast decoding (Fast-dLLM, Wu et al. 2025), for the confidence sampler: `threshold` reveals in a round
every masked position whose confidence is at least tau (and at least one, and at least what the
schedule asks: `steps` is then an upper bound, 0 = one round per token at most); `threshold_factor`
is its factor rule (the n most confident, for the largest n with (n' + 1)(1 - c_n') < f for every
n' <= n). Each sample draws from its own random stream, seeded by (seed, its index): a sample never
depends on the batch it shares (`RowRandom`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from hybridlm.errors import UserError

SAMPLERS = ("ancestral", "remdm", "first-hitting", "confidence", "margin", "entropy", "first")
RANKED = ("confidence", "margin", "entropy", "first")  # the samplers that reveal by a ranking of the positions
VIEWS = (
    "causal",
    "unmask",
    "blocks",
    "masked",
    "denoise",
)  # ways of generating a run may offer (objectives.Generation)
REMDM_SCHEDULES = ("cap", "rescale")
CACHES = ("none", "prefix", "dual")  # full-attention diffusion's approximate caches (Fast-dLLM)
MAX_STEPS = 100_000  # network calls, new tokens: a bound that keeps a typo from running for ever


@dataclass(frozen=True)
class Sampling:
    """How to sample: the sampler and its knobs (the CLI's --sampler, --steps, --eta, ...)."""

    sampler: str = ""  # "": the view's own (confidence for unmasking, first for <mask> tokens after the text)
    # rounds in all (split evenly over semi-autoregressive blocks; 0: one per token); not used by first-hitting
    steps: int = 32
    eta: float = 0.0  # remdm: the remasking strength
    remdm_schedule: str = "cap"  # remdm: sigma_t = min(eta, sigma_max) (cap) or eta * sigma_max (rescale)
    block_length: int = 0  # diffusion: reveal the answer in blocks of this many tokens, left to right (LLaDA)
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    threshold: float | None = None  # confidence: reveal every position at least this sure, each round
    threshold_factor: float | None = None  # confidence: Fast-dLLM's factor rule instead of a fixed threshold
    cache: str = "none"  # diffusion with blocks: prefix | dual keys and values reused between refreshes
    cache_refresh: int | None = None  # with a cache: also recompute it every K rounds of a block (None: per block)
    cfg_scale: float = 0.0  # diffusion: unsupervised classifier-free guidance (LLaDA), 0 = none
    view: str = ""  # how a run that generates in several ways does it (VIEWS); "": its own first way
    min_new_tokens: int = 0  # no stop token before this many new tokens
    stop: tuple[str, ...] = ()  # a sample also ends before the first of these strings
    self_correct: int = 0  # GIDD's self-correction: at most this many rounds after generating (one token a round)
    correct_temperature: float = 0.1  # self-correction's draws (GIDD's default)

    def check(self) -> Sampling:
        """The one set of rules for these knobs (every command that samples asks it), named by their flags."""
        if self.sampler and self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r} (choose one of: {', '.join(SAMPLERS)})")
        if self.remdm_schedule not in REMDM_SCHEDULES:
            raise UserError(f"unknown --remdm-schedule {self.remdm_schedule!r} (choose cap or rescale)")
        rules = (
            (
                "--steps",
                self.steps,
                0 <= self.steps <= MAX_STEPS,
                f"in 0 ... {MAX_STEPS:,} (one network call each; 0: one per token)",
            ),
            ("--block-length", self.block_length, 0 <= self.block_length <= MAX_STEPS, f"in 0 ... {MAX_STEPS:,}"),
            ("--top-k", self.top_k, self.top_k >= 0, ">= 0 (0 = off)"),
            ("--temperature", self.temperature, 0 <= self.temperature < float("inf"), "finite and >= 0 (0 = greedy)"),
            ("--top-p", self.top_p, 0 < self.top_p <= 1, "in (0, 1]"),
            ("--min-p", self.min_p, 0 <= self.min_p <= 1, "in [0, 1] (0 = off)"),
            ("--eta", self.eta, 0 <= self.eta and (self.eta <= 1 or self.remdm_schedule == "cap"), "in [0, 1]"),
            ("--threshold", self.threshold, self.threshold is None or 0 < self.threshold <= 1, "in (0, 1]"),
            (
                "--threshold-factor",
                self.threshold_factor,
                self.threshold_factor is None or 0 < self.threshold_factor < float("inf"),
                "finite and > 0",
            ),
            (
                "--cache-refresh",
                self.cache_refresh,
                self.cache_refresh is None or 1 <= self.cache_refresh <= MAX_STEPS,
                f"in 1 ... {MAX_STEPS:,} rounds",
            ),
            ("--cfg-scale", self.cfg_scale, math.isfinite(self.cfg_scale) and self.cfg_scale >= 0, "finite and >= 0"),
            (
                "--self-correct",
                self.self_correct,
                0 <= self.self_correct <= MAX_STEPS,
                f"in 0 ... {MAX_STEPS:,} rounds",
            ),
            (
                "--correct-temperature",
                self.correct_temperature,
                0 <= self.correct_temperature < float("inf"),
                "finite and >= 0 (0 = the argmax)",
            ),
        )
        for flag, value, ok, want in rules:
            if not ok:
                raise UserError(f"{flag} must be {want} (got {value})")
        if self.eta and self.sampler != "remdm":
            raise UserError(f"--eta is remdm's remasking strength; the {self.sampler} sampler does not remask")
        if self.view and self.view not in VIEWS:
            raise UserError(f"unknown --view {self.view!r} (choose one of: {', '.join(VIEWS)})")
        if not 0 <= self.min_new_tokens <= MAX_STEPS:
            raise UserError(f"--min-new-tokens must be in 0 ... {MAX_STEPS:,} (got {self.min_new_tokens})")
        if self.parallel and self.sampler not in ("", "confidence"):
            raise UserError(f"--threshold and --threshold-factor are --sampler confidence's rules (not {self.sampler})")
        if self.threshold is not None and self.threshold_factor is not None:
            raise UserError("give --threshold or --threshold-factor, not both")
        if self.cache not in CACHES:
            raise UserError(f"unknown --cache {self.cache!r} (choose one of: {', '.join(CACHES)})")
        if self.cache_refresh is not None and self.cache == "none":
            raise UserError("--cache-refresh needs a cache to refresh: add --cache prefix or --cache dual")
        return self

    def resolved(self, default: str) -> Sampling:
        """This sampling with its sampler named: `default` where none was asked for."""
        return self if self.sampler else replace(self, sampler=default)

    @property
    def parallel(self) -> bool:
        """Whether a round reveals by threshold (every position sure enough) rather than by schedule alone."""
        return self.threshold is not None or self.threshold_factor is not None

    @property
    def fast(self) -> bool:
        """Whether a diffusion-decoding knob is set (a threshold, a cache or guidance)."""
        return self.parallel or self.cache != "none" or bool(self.cfg_scale)

    @property
    def filters(self) -> dict:
        return dict(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p)


def _truncate(probs: torch.Tensor, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    if top_k and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, -1).values[..., -1:]
        probs = torch.where(probs < kth, torch.zeros_like(probs), probs)
    if min_p > 0:
        probs = torch.where(probs < min_p * probs.max(-1, keepdim=True).values, torch.zeros_like(probs), probs)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop = cum - sorted_p > top_p * cum[..., -1:]  # keep the smallest prefix reaching top_p
        sorted_p = torch.where(drop, torch.zeros_like(sorted_p), sorted_p)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return probs / probs.sum(-1, keepdim=True)


def _greedy(scores: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(scores, dtype=torch.float64)
    return out.scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)


def filter_logits(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    """Probabilities (float64) after temperature, top-k, top-p (nucleus) and min-p filtering."""
    logits = logits.double()
    if temperature <= 0:
        return _greedy(logits)
    return _truncate(torch.softmax(logits / temperature, -1), top_k, top_p, min_p)


def filter_probs(probs: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    """filter_logits on probabilities (float64); the identity (the same tensor) when nothing filters."""
    if temperature <= 0:
        return _greedy(probs)
    if temperature == 1 and not top_k and top_p >= 1 and min_p <= 0:
        return probs
    if temperature != 1:
        logp = torch.where(probs > 0, probs.log(), torch.full_like(probs, float("-inf")))
        probs = torch.softmax(logp / temperature, -1)
    return _truncate(probs, top_k, top_p, min_p)


def row_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a request seeded `seed` (SeedSequence: distinct streams for nearby pairs)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0] >> 1)


def _signed(x: int) -> int:
    """A 64-bit constant as torch's int64 holds it."""
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x >> bits as unsigned 64-bit numbers shift (int64's >> copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (multiplication wraps modulo 2^64)."""
    x = x + _GOLDEN
    x = (x ^ _shift(x, 30)) * _MIX1
    x = (x ^ _shift(x, 27)) * _MIX2
    return x ^ _shift(x, 31)


class RowRandom:
    """Counter-based random numbers, a stream per sample: draw k of sample r is a hash of (r's seed, k,
    position), r's seed from (seed, r's index in the request). What a sample draws depends on its own
    index and how many draws it has taken, never on the batch it shares or how many samples were asked
    for; every row's draws are computed at once, on the device of the seeds."""

    def __init__(self, seeds: torch.Tensor, counters: torch.Tensor | None = None, rows: torch.Tensor | None = None):
        self.seeds = seeds  # [N] int64, one per sample of the request
        self.counters = torch.zeros_like(seeds) if counters is None else counters  # draws taken, shared by views
        self.rows = rows  # a view over these rows

    @classmethod
    def seeded(cls, seed: int, n: int, first: int = 0, device="cpu") -> RowRandom:
        seeds = [row_seed(seed, first + i) for i in range(n)]
        return cls(torch.tensor(seeds, dtype=torch.long, device=torch.device(device)))

    @classmethod
    def of(cls, rng, n: int, device="cpu") -> RowRandom:
        """A RowRandom as given, or one seeded from a torch.Generator's seed."""
        return rng if isinstance(rng, RowRandom) else cls.seeded(rng.initial_seed(), n, device=device)

    def __len__(self) -> int:
        return len(self.seeds) if self.rows is None else len(self.rows)

    def select(self, rows) -> RowRandom:
        """A view of these rows: its draws advance their streams."""
        rows = torch.as_tensor(rows, device=self.seeds.device)
        return RowRandom(self.seeds, self.counters, rows if self.rows is None else self.rows[rows])

    def _bits(self, shape) -> torch.Tensor:
        """53 random bits [N, *shape] per row (int64), the rows' next draw; their counters advance by one."""
        seeds = self.seeds if self.rows is None else self.seeds[self.rows]
        counters = self.counters if self.rows is None else self.counters[self.rows]
        where = torch.arange(math.prod(shape), device=seeds.device).view(1, *shape)
        stream = _mix(seeds ^ _mix(counters)).view(-1, *[1] * len(shape))
        if self.rows is None:
            self.counters += 1
        else:
            self.counters[self.rows] += 1
        return _shift(_mix(stream + where), 11)

    def rand(self, shape, dtype=torch.float32) -> torch.Tensor:
        """Uniform draws in [0, 1) [N, *shape]."""
        return (self._bits(tuple(shape)).double() * 2.0**-53).to(dtype)

    def draw(self, probs: torch.Tensor) -> torch.Tensor:
        """One token per position of probs [N, ..., V] (float64) by the inverse of its CDF."""
        cdf = probs.cumsum(-1)
        target = self.rand(probs.shape[1:-1], torch.float64).unsqueeze(-1) * cdf[..., -1:]
        token = torch.searchsorted(cdf, target, right=True).squeeze(-1)
        return token.clamp_(max=probs.shape[-1] - 1)


def reveal_scores(sampler: str, probs: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """How sure the model is of each drawn token (higher: revealed first)."""
    if sampler == "confidence":
        return probs.gather(-1, drawn[..., None]).squeeze(-1)
    if sampler == "margin":
        top = probs.topk(2, -1).values
        return top[..., 0] - top[..., 1]
    if sampler == "first":  # left to right
        return -torch.arange(probs.shape[-2], device=probs.device, dtype=probs.dtype).expand(probs.shape[:-1])
    return (probs * probs.clamp(min=1e-300).log()).sum(-1)  # entropy: minus it, lower entropy first


def parallel_counts(sampling: Sampling, confidence: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """How many of each row's masked positions a threshold rule reveals this round (the most confident
    first; at least one where any is masked). confidence [N, L]: p(drawn token) at each position."""
    sure = torch.where(masked, confidence, torch.full_like(confidence, -1.0)).sort(1, descending=True).values
    if sampling.threshold is not None:
        count = (sure >= sampling.threshold).sum(1)
    else:  # the factor rule: the longest run of the sorted confidences with c_n >= 1 - f / (n + 1)
        n = torch.arange(1, sure.shape[1] + 1, device=sure.device, dtype=sure.dtype)
        bar = 1 - sampling.threshold_factor / (n + 1)
        bar[0] = -0.5  # the most confident one always
        count = ((sure >= bar) & (sure >= 0)).long().cumprod(1).sum(1)
    return torch.maximum(count, masked.any(1).long())


@torch.no_grad()
def denoise(
    predict: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    start: int,
    end: int,
    mask_id: int,
    sampling: Sampling,
    alpha: Callable[[float], float],
    rng: RowRandom,
    steps: int,
    nfe: torch.Tensor,
) -> None:
    """Reveal the <mask> tokens of x[:, start:end] in place over at most `steps` rounds.

    predict(rows) -> the model's probabilities [len(rows), end - start, V] (float64) at the region for
    those rows of x; nfe [N] counts each row's calls; rng draws row r's randomness from its own
    generator. Tokens are drawn from the filtered probabilities (temperature, top-k, ...) and ranked by
    the model's own. Only positions masked on entry are ever remasked (a prompt is never changed)."""
    n, device = len(x), x.device
    region = x[:, start:end]  # a view: writes reach x
    generated = region == mask_id
    probs = model_probs = None
    stale = torch.ones(n, dtype=torch.bool, device=device)

    def refresh():
        """p(x0 | x_t) again for the rows that changed and still have a <mask> to fill."""
        nonlocal probs, model_probs
        rows = (stale & (region == mask_id).any(1)).nonzero().flatten()
        if len(rows):
            fresh = predict(rows)
            filtered = filter_probs(fresh, **sampling.filters)
            if probs is None:
                model_probs = fresh.new_zeros((n, *fresh.shape[1:]))
                probs = model_probs if filtered is fresh else torch.zeros_like(model_probs)
            model_probs[rows] = fresh
            if probs is not model_probs:
                probs[rows] = filtered
            nfe[rows] += 1
            stale[rows] = False

    if sampling.sampler == "first-hitting":
        while True:
            masked = region == mask_id
            if not masked.any():
                return
            refresh()
            # one masked position per row, uniformly: the first to be hit going back in time
            rows = masked.any(1).nonzero().flatten()
            drawing = rng.select(rows)  # a row draws only while it has a <mask>: its draws are its own
            pos = torch.where(masked[rows], drawing.rand(masked.shape[1:]), -1.0).argmax(1)
            region[rows, pos] = drawing.draw(probs[rows, pos][:, None])[:, 0]
            stale[rows] = True

    for s in range(steps, 0, -1):
        masked = region == mask_id
        if not masked.any() and (sampling.sampler != "remdm" or s == 1 or not sampling.eta):
            return
        t, t_next = s / steps, (s - 1) / steps
        a_t, a_s = alpha(t), alpha(t_next)
        refresh()
        # a row draws only while it can change (a <mask> left, or remdm's remasking): how many numbers its
        # generator gives never depends on the rows beside it
        remasking = sampling.sampler == "remdm" and sampling.eta > 0
        rows = torch.arange(n, device=device) if remasking else masked.any(1).nonzero().flatten()
        drawing = rng.select(rows)
        drawn = region.clone()
        drawn[rows] = drawing.draw(probs[rows])
        if sampling.sampler in ("ancestral", "remdm"):
            sigma = 0.0
            if remasking and a_t > 0:
                sigma_max = min(1.0, (1 - a_s) / a_t)
                sigma = min(sampling.eta, sigma_max) if sampling.remdm_schedule == "cap" else sampling.eta * sigma_max
            reveal_p = (a_s - (1 - sigma) * a_t) / max(1 - a_t, 1e-12)
            uniform = torch.ones(masked.shape, dtype=torch.float64, device=device)
            uniform[rows] = drawing.rand(masked.shape[1:], torch.float64)
            reveal = masked & (uniform < reveal_p)
            if s == 1:
                reveal = masked  # alpha(0) = 1: everything is revealed at the end
            remask = torch.zeros_like(masked)
            if sigma > 0:
                remask = generated & ~masked & (drawing.rand(masked.shape[1:]) < sigma)
        else:
            share = (a_s - a_t) / max(1 - a_t, 1e-12)
            counts = masked.sum(1)
            k = counts if s == 1 else torch.round(counts.double() * share).long()
            score = reveal_scores(sampling.sampler, model_probs, drawn)
            if sampling.parallel:  # every position sure enough, and never fewer than the schedule asks
                k = torch.maximum(k, parallel_counts(sampling, score, masked))
            score = score.masked_fill(~masked, float("-inf"))
            rank = score.argsort(1, descending=True).argsort(1)
            reveal = masked & (rank < k[:, None])
            remask = torch.zeros_like(masked)
        region[reveal] = drawn[reveal]
        region[remask] = mask_id
        stale |= (reveal | remask).any(1)


def region_steps(total_steps: int, regions: int) -> int:
    """Rounds per semi-autoregressive region: the total split evenly, at least one each."""
    return max(1, total_steps // max(regions, 1))

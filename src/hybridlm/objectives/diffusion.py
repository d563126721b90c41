"""Masked discrete diffusion (MDLM / MD4): the continuous-time NELBO as a weighted cross-entropy.

Forward process: each token is replaced by <mask> independently with probability 1 - alpha(t),
t ~ U(eps, 1) per sequence (low-discrepancy over the batch). The NELBO per token is
    E_t [ sum over masked tokens of -log p(x0 | x_t) * (-alpha'(t) / (1 - alpha(t))) ] / L
and MDLM's SUBS parameterisation never predicts <mask>. With frequency-informed masking each
token gets its own schedule alpha(t) ** s(token), with s > 1 for rare tokens (masked more) and
the matching weight, so every token's term keeps the ELBO form.

The 2025 BabyLM diffusion winner's schedules (Kosmopoulou et al., `masking/noise_schedules.py`): `gaussian`
draws the mask rate from N(mu, sigma) (alpha(u) = 1 - mu + sigma Phi^-1(u), u = 1 - t, clamped) and
`bimodal-gaussian` from a mixture whose right mode moves from its initial to its final mean over training;
their loss weights |alpha'|^gamma / (1 - alpha) with `loss_weight_power` gamma (0.1 in the winner's runs) are
not an ELBO's, so validation, perplexity and the samplers use the log-linear schedule, whose NELBO is the
same bound for a model without time input: `val_bpb` stays a bound whatever weights training uses. Every
schedule takes gamma (1: the ELBO).

This file is the one home of the diffusion maths: training (`corrupt`), validation, perplexity
(`time_mask`), sentence scoring (`subset_masks`) and the samplers (`alpha`) all call it.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from hybridlm.data import load_unigram
from hybridlm.errors import UserError
from hybridlm.objectives.base import SPECIAL, Batch, Objective, Options, in_range, maskable, one_of, option
from hybridlm.objectives.capabilities import MASKED_LM, Attention, Capabilities, Generation, Infill, Likelihood

ELBO_SCHEDULES = ("loglinear", "linear", "cosine")
SCHEDULES = (*ELBO_SCHEDULES, "gaussian", "bimodal-gaussian")
ESTIMATORS = ("time", "count")


def alpha_and_weight(t: torch.Tensor, schedule: str):
    """alpha(t) (probability a token is still clean) and the ELBO weight -alpha'(t)/(1-alpha(t))."""
    if schedule == "loglinear":  # MDLM's log-linear noise: alpha = 1 - t, weight 1/t
        return 1 - t, 1 / t
    if schedule == "linear":  # sigma(t) linear in t (MDLM "linear"), alpha = exp(-sigma)
        sigma_max = 20.0
        sigma = sigma_max * t
        return torch.exp(-sigma), sigma_max / torch.expm1(sigma)
    if schedule == "cosine":  # MD4: alpha = 1 - cos(pi/2 (1 - t))
        a = math.pi / 2 * (1 - t)
        return 1 - torch.cos(a), (math.pi / 2) * torch.tan(a)
    raise UserError(f"unknown schedule {schedule!r} (choose one of: {', '.join(SCHEDULES)})")


def gaussian_alpha_and_weight(t: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float, power: float):
    """The winner's Gaussian schedule at t (u = 1 - t in its own orientation): alpha = clamp(1 - mean + std z),
    z = Phi^-1(u); weight |alpha'|^power / (1 - alpha), alpha' = std / phi(z) (the unclamped derivative)."""
    u = torch.clamp(1 - t, 1e-8, 1 - 1e-8)
    z = math.sqrt(2) * torch.erfinv(2 * u - 1)
    alpha = torch.clamp((1 - mean) + std * z, 1e-8, 1 - 1e-8)
    derivative = std * math.sqrt(2 * math.pi) * torch.exp(0.5 * z**2)
    return alpha, derivative.abs() ** power / (1 - alpha + 1e-8)


def sample_times(n: int, generator, eps: float = 1e-3) -> torch.Tensor:
    """t in [eps, 1): stratified over the batch (one uniform offset, n evenly spaced strata)."""
    u = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(n, dtype=torch.float64) / n) % 1
    return (eps + (1 - eps) * u).float()


def diffusable(ids: torch.Tensor) -> torch.Tensor:
    """Tokens the forward process may mask: text and </s>; <s> marks documents, given, never generated."""
    return (maskable(ids) | (ids == SPECIAL["eos"])) & (ids != SPECIAL["bos"])


def random_subsets(k: torch.Tensor, can: torch.Tensor, generator) -> torch.Tensor:
    """bool [B, L]: k[b] positions of row b chosen uniformly among those where can[b] is True."""
    scores = torch.rand(can.shape, generator=generator)
    scores[~can] = 2.0  # never chosen
    rank = scores.argsort(1).argsort(1)
    return (rank < k[:, None]) & can


def subset_masks(n: int, generator, samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The bound by the number of masked tokens, for scoring: (masks [samples * n, n], weights).

    For a model without time input the continuous-time NELBO does not depend on the schedule
    and, integrating the binomial over t, equals
    sum_{k=1..n} E_{|S| = k} [ (1/k) sum_{i in S} -log p(x_i | x with S masked) ]
    (the any-order autoregressive form, cf. RADD): one random subset per k and sample, weight
    1 / (k * samples). The count estimator of training draws one k per sequence from the same form;
    block diffusion bounds each block this way.
    """
    k = torch.arange(1, n + 1).repeat(samples)
    masks = random_subsets(k, torch.ones(len(k), n, dtype=torch.bool), generator)
    return masks, 1.0 / (k.double() * samples)


@dataclass(frozen=True)
class DiffusionOptions(Options):
    schedule: str = option(
        "loglinear", "diffusion noise schedule: loglinear (MDLM), linear or cosine (MD4)", *one_of(*SCHEDULES)
    )
    diffusion_eps: float = option(1e-3, "diffusion: t ~ U(eps, 1)", *in_range(0, 1, lo_open=True, hi_open=True))
    # an exponent on surprisal ratios: far past 10 every rate is 0 or 1
    frequency_masking: float = option(
        0.0, "diffusion: rarer tokens masked more, alpha(t) ** s(token)", *in_range(0, 10)
    )
    frequency_method: str = option(
        "exponent",
        "diffusion: exponent (frequency_masking: alpha ** s(token), an ELBO) or rank (the 2025 winner's: "
        "each token's mask probability from its frequency rank, the sequence keeping its rate)",
        *one_of("exponent", "rank"),
    )
    pow_frequency: float = option(0.0, "frequency_method rank: the exponent on the rank weights (the winner: 0.02; "
                                  "0 = off)", *in_range(0, 10))  # fmt: skip
    time_conditioning: bool = option(
        False,
        "diffusion: the model is told each sequence's noise level through adaLN (the 2025 winner's, which is "
        "told its mask rate; hlm tells the share of its tokens masked, what the model sees)",
    )
    cond_dim: int = option(128, "diffusion with time_conditioning: the noise embedding's size", *in_range(8, 4096))
    mask_curriculum: bool = option(
        False,
        "frequency_method rank: the exponent grows to pow_frequency over training "
        "(epoch / 9 of it in the tenth of training numbered epoch, as the winner's 10 epochs)",
    )
    diffusion_estimator: str = option(
        "time",
        "diffusion: time (t ~ U(eps, 1), weight -a'/(1-a)) or count (k masked ~ U{1..n}, weight 1/k; log-linear only)",
        *one_of(*ESTIMATORS),
    )
    diffusion_shift: bool = option(
        False, "diffusion: position i predicts token i+1, the layout of a causal model it adapts (DiffuGPT)"
    )
    loss_weight_power: float = option(
        1.0,
        "diffusion: training weights |alpha'|^gamma / (1 - alpha) (1: the ELBO; the 2025 winner: 0.1); validation "
        "always reports the log-linear NELBO, a bound",
        *in_range(0, 10),
    )
    gaussian_mu: float = option(0.2, "schedule gaussian: the mean mask rate", *in_range(0, 1))
    gaussian_sigma: float = option(
        0.12, "schedule gaussian: the spread of the mask rate", *in_range(0, 1, lo_open=True)
    )
    bimodal_left_mean: float = option(0.12, "schedule bimodal-gaussian: the left mode's mask rate", *in_range(0, 1))
    bimodal_left_std: float = option(0.02, "schedule bimodal-gaussian: the left mode's spread",
                                     *in_range(0, 1, lo_open=True))  # fmt: skip
    bimodal_right_initial: float = option(0.2, "schedule bimodal-gaussian: the right mode's mask rate at the start "
                                          "(the winner's runs: 0.4)", *in_range(0, 1))  # fmt: skip
    bimodal_right_final: float = option(0.85, "schedule bimodal-gaussian: the right mode's mask rate at the end",
                                        *in_range(0, 1))  # fmt: skip
    bimodal_right_std: float = option(0.08, "schedule bimodal-gaussian: the right mode's spread",
                                      *in_range(0, 1, lo_open=True))  # fmt: skip
    bimodal_exp_rate: float = option(1.0, "schedule bimodal-gaussian: the right mode moves as 1 - exp(-rate * done)",
                                     *in_range(0, 100))  # fmt: skip
    bimodal_weight_left: float = option(0.6, "schedule bimodal-gaussian: the left mode's share of sequences",
                                        *in_range(0, 1))  # fmt: skip

    def check_together(self):
        if self.frequency_method == "rank" and self.frequency_masking:
            raise UserError("frequency_method rank takes pow_frequency (the winner: 0.02), not frequency_masking")
        if self.diffusion_estimator == "count" and (self.schedule != "loglinear" or self.frequency_masking):
            raise UserError(
                "diffusion_estimator = count is the log-linear NELBO: use schedule loglinear and no frequency_masking"
            )


class DiffusionObjective(Objective):
    name = "diffusion"
    Options = DiffusionOptions
    # the NELBO, an upper bound on the NLL; MDLM's SUBS: <mask> is never a prediction
    capabilities = Capabilities(Attention.BIDIRECTIONAL, Likelihood.BOUND, ("elbo",), Generation.UNMASK,
                                Infill.IN_PLACE, MASKED_LM, "NELBO (nats/token)",
                                forbid_mask_prediction=True)  # fmt: skip

    def __init__(self, vocab_size, options: DiffusionOptions | None = None, unigram=None, **kw):
        super().__init__(vocab_size, options, **kw)
        o = self.options
        self.schedule, self.eps, self.estimator = o.schedule, o.diffusion_eps, o.diffusion_estimator
        # what validation, perplexity and the samplers use: the training schedule where its weights are an
        # ELBO's, else the log-linear one (the same bound for a model without time input)
        elbo = o.schedule in ELBO_SCHEDULES and o.loss_weight_power == 1
        self.bound_schedule = o.schedule if elbo else "loglinear"
        if o.diffusion_shift:  # a masked token is read one position earlier, in scoring, infilling and sampling
            self.capabilities = type(self).capabilities.with_(infill=Infill.NEXT_TOKEN)
        if o.time_conditioning:  # no transformers class holds a noise-conditioned model
            self.capabilities = self.capabilities.with_(export=frozenset())
        # per-token schedule exponents; without corpus counts (evaluating a run) the plain schedule
        # is used, which gives a valid bound too
        self.token_exponent = (
            frequency_exponents(unigram, o.frequency_masking) if o.frequency_masking and unigram is not None else None
        )
        # the winner's rank weights: (rank + 1) / V, rank 0 the most frequent token
        self.rank_weights = None
        if o.frequency_method == "rank" and o.pow_frequency and unigram is not None:
            counts = torch.as_tensor(np.asarray(unigram, dtype=np.float64))
            order = torch.sort(counts / counts.sum(), descending=True, stable=True).indices
            ranks = torch.empty(len(order), dtype=torch.float32)
            ranks[order] = torch.arange(len(order), dtype=torch.float32)
            self.rank_weights = (ranks + 1) / vocab_size

    @property
    def bound_shift(self) -> int:
        """Where the bound reads a masked token's prediction: at its position (0) or one before (1)."""
        return 1 if self.options.diffusion_shift else 0

    @classmethod
    def from_config(cls, cfg, vocab_size, data_dir=None):
        options = cls.read_options(cfg.options)
        wanted = options.frequency_masking or (options.frequency_method == "rank" and options.pow_frequency)
        unigram = load_unigram(data_dir) if wanted and data_dir is not None else None
        return cls(vocab_size, options, unigram=unigram, document_mask=cfg.document_mask)

    # ------------------------------------------------------------ the forward process
    def schedule_at(self, t: torch.Tensor, generator, done: float = 1.0, train: bool = True):
        """(alpha, weight) at times t [B]: the training schedule (train) or the bound's."""
        o = self.options
        if not train or self.schedule in ELBO_SCHEDULES:
            alpha, weight = alpha_and_weight(t, self.schedule if train else self.bound_schedule)
            if train and o.loss_weight_power != 1:  # |alpha'|^gamma / (1 - alpha), alpha' = -weight (1 - alpha)
                weight = (weight * (1 - alpha)).abs() ** o.loss_weight_power / (1 - alpha)
            return alpha, weight
        if self.schedule == "gaussian":
            return gaussian_alpha_and_weight(t, o.gaussian_mu, o.gaussian_sigma, o.loss_weight_power)
        # bimodal: the right mode moves over training; each sequence draws its mode
        moved = 1.0 - math.exp(-o.bimodal_exp_rate * min(done, 1.0))
        right = o.bimodal_right_initial + (o.bimodal_right_final - o.bimodal_right_initial) * moved
        left = torch.rand(t.shape, generator=generator) < o.bimodal_weight_left
        mean = torch.where(left, o.bimodal_left_mean, right)
        std = torch.where(left, o.bimodal_left_std, o.bimodal_right_std)
        return gaussian_alpha_and_weight(t, mean, std, o.loss_weight_power)

    def time_mask(self, ids: torch.Tensor, t: torch.Tensor, generator, can=None, per_token_schedule: bool = False,
                  done: float = 1.0):  # fmt: skip
        """(mask, weight): each position of `can` masked with probability 1 - alpha(t) (t: [B]); the
        weight of each position. per_token_schedule (training): the training schedule, frequency-informed
        alpha ** s(token); else the bound's schedule."""
        B, L = ids.shape
        can = diffusable(ids) if can is None else can
        alpha, weight = self.schedule_at(t, generator, done, train=per_token_schedule)
        alpha, weight = alpha[:, None].expand(B, L), weight[:, None].expand(B, L)
        if per_token_schedule and self.token_exponent is not None:
            s = self.token_exponent[ids]
            alpha_s = alpha.clamp(min=1e-12) ** s
            # d/dt alpha^s = s alpha^(s-1) alpha'; alpha' = -weight (1 - alpha)
            weight = s * alpha_s / alpha.clamp(min=1e-12) * weight * (1 - alpha) / (1 - alpha_s).clamp(min=1e-12)
            alpha = alpha_s
        if per_token_schedule and self.rank_weights is not None:
            alpha = 1 - self.frequency_mask_probabilities(ids, alpha[:, 0], done)
        mask = (torch.rand(B, L, generator=generator) < 1 - alpha) & can
        return mask, weight

    def frequency_mask_probabilities(self, ids: torch.Tensor, alpha: torch.Tensor, done: float) -> torch.Tensor:
        """The winner's per-token mask probabilities [B, L] for sequences at clean rates alpha [B]
        (`masking_processor.py`): rank weights min-max normalised in each sequence, raised to pow_frequency
        (with the curriculum, epoch / 9 of it), then moved so that each sequence's mean is its mask rate."""
        o, p = self.options, (1 - alpha)[:, None]
        w = self.rank_weights[ids]
        low, high = w.min(dim=1, keepdim=True).values, w.max(dim=1, keepdim=True).values
        w = (w - low) / (high - low + 1e-8)
        epoch = min(9, math.floor(10 * done + 1e-9))  # the winner trains 10 epochs: its epoch is a tenth of training
        power = epoch / 9 * o.pow_frequency if o.mask_curriculum else o.pow_frequency
        w = torch.pow(w, power)
        mean = w.mean(dim=1, keepdim=True)
        w = torch.where(mean > p, w * (p / (mean + 1e-8)), w)
        return torch.where(mean < p, -(1 - w) * (1 - p) / (1 - mean + 1e-8) + 1, w)

    def bound_times(self, n: int, generator) -> torch.Tensor:
        return sample_times(n, generator, self.eps)

    def subset_masks(self, n: int, generator, samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The bound by the number of masked tokens, for scoring (see `subset_masks` below)."""
        return subset_masks(n, generator, samples)

    def corrupt(self, ids, generator, fraction_done=1.0, train=True, t=None) -> Batch:
        window, ids = ids, (ids[:, 1:] if self.options.diffusion_shift else ids[:, :-1])  # the tokens the bound covers
        B, L = ids.shape
        can = diffusable(ids)
        if self.estimator == "count" and t is None:
            return self._corrupt_count(ids, can, generator, window)
        t = sample_times(B, generator, self.eps) if t is None else t
        mask, weight = self.time_mask(ids, t, generator, can, per_token_schedule=train, done=fraction_done)
        n_tokens = can.sum().clamp(min=1)
        w = torch.where(mask, weight, torch.zeros_like(weight)) / n_tokens
        return self._batch(window, ids, mask, w, can)

    def _batch(self, window, ids, mask, w, can) -> Batch:
        """Inputs with the masked tokens replaced; with diffusion_shift, read one position earlier
        (position i, seeing token i masked or not, predicts token i+1)."""
        if self.options.diffusion_shift:
            seen = window[:, :-1]
            hidden = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], 1)
            inputs = torch.where(hidden, torch.full_like(seen, SPECIAL["mask"]), seen)
            return Batch(inputs, ids, w, can, attention=self.attention_of(seen, False))
        inputs = torch.where(mask, torch.full_like(ids, SPECIAL["mask"]), ids)
        return Batch(inputs, ids, w, can, attention=self.attention_of(ids, False))

    def _corrupt_count(self, ids, can, generator, window) -> Batch:
        """The same NELBO, sampled by the number of masked tokens k ~ U{1..n} (see subset_masks):
        each sequence contributes the mean CE of its masked tokens, a bounded term, where the time
        form has weights up to 1/eps."""
        B, L = ids.shape
        n = can.sum(1)
        u = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(B, dtype=torch.float64) / B) % 1
        k = torch.minimum((u * n).floor().long() + 1, n.clamp(min=1))  # stratified over the batch, uniform on 1..n
        mask = random_subsets(k, can, generator)
        has = (n > 0).float()
        per_seq = (n.float() / k.float()) * has / n.sum().clamp(min=1)  # per-token normalisation over the batch
        return self._batch(window, ids, mask, mask.float() * per_seq[:, None], can)

    def noise_level(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The share of each row's diffusable tokens that are <mask>: a function of x_t, so every bound (training,
        validation, the subset scorers) stays one and the samplers' cache of unchanged rows stays valid."""
        masked = (input_ids == SPECIAL["mask"]).sum(1)
        return masked.float() / (masked + diffusable(input_ids).sum(1)).clamp(min=1).float()

    # ------------------------------------------------------------ sampling
    def alpha(self, t: float) -> float:
        """The schedule the run trained with, reversed by the samplers."""
        if t <= 0:
            return 1.0
        return float(alpha_and_weight(torch.tensor([t], dtype=torch.float64), self.bound_schedule)[0][0])


def frequency_exponents(unigram, strength: float) -> torch.Tensor:
    """Per-token schedule exponent s = (surprisal / mean surprisal) ** strength (s > 1: rarer, masked more)."""
    counts = np.asarray(unigram, dtype=np.float64) + 1.0  # add-one so unseen tokens are finite and rare
    surprisal = -np.log(counts / counts.sum())
    mean = float((surprisal * counts).sum() / counts.sum())  # token-weighted mean over the corpus
    return torch.from_numpy((surprisal / mean) ** strength).float()

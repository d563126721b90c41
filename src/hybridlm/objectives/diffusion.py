"""Masked discrete diffusion (MDLM / MD4): the continuous-time NELBO as a weighted cross-entropy.

Forward process: each token is replaced by <mask> independently with probability 1 - alpha(t),
t ~ U(eps, 1) per sequence (low-discrepancy over the batch). The NELBO per token is
    E_t [ sum over masked tokens of -log p(x0 | x_t) * (-alpha'(t) / (1 - alpha(t))) ] / L
and MDLM's SUBS parameterisation never predicts <mask>. With frequency-informed masking each
token gets its own schedule alpha(t) ** s(token), with s > 1 for rare tokens (masked more) and
the matching weight, so every token's term keeps the ELBO form.
"""

import math

import numpy as np
import torch

from hybridlm.objectives.base import SPECIAL, Batch, Objective, maskable

SCHEDULES = ("loglinear", "linear", "cosine")


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
    raise ValueError(f"unknown schedule {schedule!r} (choose one of: {', '.join(SCHEDULES)})")


def sample_times(n: int, generator, eps: float = 1e-3, antithetic: bool = True) -> torch.Tensor:
    """t in [eps, 1): stratified over the batch (one uniform offset, n evenly spaced strata)."""
    if antithetic:
        u = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(n, dtype=torch.float64) / n) % 1
    else:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (eps + (1 - eps) * u).float()


class DiffusionObjective(Objective):
    name = "diffusion"
    forbid_mask_prediction = True

    def __init__(self, vocab_size, schedule="loglinear", eps=1e-3, frequency_masking=0.0, unigram=None, estimator="time", **kw):
        super().__init__(vocab_size, **kw)
        if estimator not in ("time", "count"):
            raise ValueError(f"unknown diffusion estimator {estimator!r} (choose time or count)")
        if estimator == "count" and (schedule != "loglinear" or frequency_masking):
            raise ValueError("the count estimator is the log-linear NELBO; it takes neither another schedule nor frequency masking")
        self.estimator = estimator
        alpha_and_weight(torch.tensor([0.5]), schedule)  # validate the name early
        self.schedule, self.eps = schedule, eps
        self.token_exponent = None
        if frequency_masking:
            if unigram is None:
                raise ValueError("frequency-informed masking needs the corpus unigram counts")
            self.token_exponent = frequency_exponents(unigram, frequency_masking)

    def corrupt(self, ids, generator, progress=1.0, train=True, t=None) -> Batch:
        ids = ids[:, :-1]
        B, L = ids.shape
        if self.estimator == "count" and t is None:
            return self._corrupt_count(ids, generator)
        t = sample_times(B, generator, self.eps) if t is None else t
        alpha, weight = alpha_and_weight(t[:, None].expand(B, L), self.schedule)
        if self.token_exponent is not None and train:
            s = self.token_exponent[ids]
            alpha_s = alpha.clamp(min=1e-12) ** s
            # d/dt alpha^s = s alpha^(s-1) alpha'; alpha' = -weight (1 - alpha)
            weight = s * alpha_s / alpha.clamp(min=1e-12) * weight * (1 - alpha) / (1 - alpha_s).clamp(min=1e-12)
            alpha = alpha_s
        can = maskable(ids) | (ids == SPECIAL["eos"])
        can &= ids != SPECIAL["bos"]  # <s> marks documents: given, never generated
        mask = (torch.rand(B, L, generator=generator) < 1 - alpha) & can
        inputs = torch.where(mask, torch.full_like(ids, SPECIAL["mask"]), ids)
        n_tokens = can.sum().clamp(min=1)
        w = torch.where(mask, weight, torch.zeros_like(weight)) / n_tokens
        return Batch(input_ids=inputs, targets=ids, loss_weights=w, is_causal=torch.zeros(B, dtype=torch.bool),
                     document_ids=self._doc_ids(ids), t=t)


    def _corrupt_count(self, ids, generator) -> Batch:
        """The same NELBO, sampled by the number of masked tokens instead of t.

        For alpha = 1 - t and a model without time input, integrating the binomial over t gives
        NELBO / n = E_{k ~ U{1..n}} E_{|S| = k} [ (1/k) sum_{i in S} -log p(x_i | x_{-S}) ]
        (the any-order autoregressive form, cf. RADD): each sequence contributes the mean CE of
        its masked tokens, a bounded term, where the time form has weights up to 1/eps.
        """
        B, L = ids.shape
        can = (maskable(ids) | (ids == SPECIAL["eos"])) & (ids != SPECIAL["bos"])
        n = can.sum(1)
        u = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(B, dtype=torch.float64) / B) % 1
        k = (u * n).floor().long() + 1  # stratified over the batch, uniform on 1..n
        k = torch.minimum(k, n.clamp(min=1))
        scores = torch.rand(B, L, generator=generator)
        scores[~can] = 2.0  # never chosen
        rank = scores.argsort(1).argsort(1)
        mask = (rank < k[:, None]) & can
        inputs = torch.where(mask, torch.full_like(ids, SPECIAL["mask"]), ids)
        has = (n > 0).float()
        per_seq = (n.float() / k.float()) * has / n.sum().clamp(min=1)  # per-token normalisation over the batch
        w = mask.float() * per_seq[:, None]
        return Batch(input_ids=inputs, targets=ids, loss_weights=w, is_causal=torch.zeros(B, dtype=torch.bool),
                     document_ids=self._doc_ids(ids), t=k.float() / n.clamp(min=1).float())


def frequency_exponents(unigram, strength: float) -> torch.Tensor:
    """Per-token schedule exponent s = (surprisal / mean surprisal) ** strength (s > 1: rarer, masked more)."""
    counts = np.asarray(unigram, dtype=np.float64) + 1.0  # add-one so unseen tokens are finite and rare
    surprisal = -np.log(counts / counts.sum())
    mean = float((surprisal * counts).sum() / counts.sum())  # token-weighted mean over the corpus
    return torch.from_numpy((surprisal / mean) ** strength).float()

"""GIDD (von Rütte et al. 2025, "Generalized Interpolating Discrete Diffusion"): masked diffusion with a share of
uniform noise, so that the model learns to doubt and fix the tokens it sees.

Forward process at t in (0, 1) (GIDD's mask-plus-uniform process, `gidd/diffusion_process.py`):
    q_t(z | x) = alpha_t 1[z = x] + m_t 1[z = <mask>] + u_t 1[z in S],
    c_t = B t^(gamma/2) (1 - t)^(gamma/2), B = 2^gamma p / (1 - p), C_t = 1 + c_t,
    alpha_t = (1 - t) / C_t, m_t = t / C_t, u_t = c_t / (C_t N),
with p = p_uniform and S the N text tokens (hlm's difference from GIDD: uniform noise draws text tokens only,
never <s>, </s>, <pad> or <unk>, which would break documents; GIDD's draws any token but <mask>). p = 0 is MDLM's
log-linear masking exactly (GIDD clamps p to e^-20); p = 1 (uniform-state diffusion) is not this family's limit.

The NELBO per token (`gidd/loss.py`): w_t(z_t) [KL(q_t(.|x) || q_t(.|x_hat)) + r - log r - 1],
r = q_t(z_t | x) / q_t(z_t | x_hat), x_hat the model's prediction (never <mask>), w_t the weight of z_t's kind
(x itself, <mask>, another token). It is what validation reports (bits per byte, a bound); training may weight
the terms as GIDD's recipe does (loss_weighting dynamic or clip). With p = 0 the bound is MDLM's (by test, on the
same batch), the run draws what a diffusion run draws, and the reference's formula is matched at p > 0 (by test).
"""

import math
from dataclasses import dataclass

import torch

from hybridlm.errors import UserError
from hybridlm.objectives.base import SPECIAL, Batch, Objective, Options, in_range, one_of, option
from hybridlm.objectives.capabilities import Attention, Capabilities, Generation, Infill, Likelihood
from hybridlm.objectives.diffusion import DiffusionObjective, diffusable, sample_times

WEIGHTINGS = ("elbo", "dynamic", "clip")


@dataclass(frozen=True)
class GiddOptions(Options):
    p_uniform: float = option(
        0.0, "gidd: the share of uniform noise (GIDD's p_u; 0 = MDLM's masking exactly)", *in_range(0, 1, hi_open=True)
    )
    gidd_gamma: float = option(1.0, "gidd: the exponent gamma of the uniform share's bump c_t", *in_range(0, 10,
                               lo_open=True))  # fmt: skip
    diffusion_eps: float = option(1e-3, "diffusion: t ~ U(eps, 1)", *in_range(0, 1, lo_open=True, hi_open=True))
    loss_weighting: str = option(
        "elbo",
        "gidd: training weights: elbo (the bound's), dynamic (GIDD's recipe) or clip (the bound's, clipped to "
        "[gidd_min_loss_weight, gidd_max_loss_weight]); validation always reports the bound",
        *one_of(*WEIGHTINGS),
    )
    gidd_min_loss_weight: float = option(0.0, "gidd: loss_weighting dynamic | clip: the lowest weight",
                                         *in_range(0, 1e6))  # fmt: skip
    gidd_max_loss_weight: float = option(2.0, "gidd: loss_weighting dynamic | clip: the highest weight (GIDD: 2)",
                                         *in_range(0, 1e6, lo_open=True))  # fmt: skip

    def check_together(self):
        if self.gidd_min_loss_weight > self.gidd_max_loss_weight:
            raise UserError("gidd_min_loss_weight must not exceed gidd_max_loss_weight")


def mixing(t: torch.Tensor, p_uniform: float, gamma: float, support: int) -> dict:
    """GIDD's process at times t (float64): alpha (x kept), mask (<mask>), uniform (each of the `support` text
    tokens), and c_t with its derivative (the weights' ingredients)."""
    t = t.double()
    b = 2.0**gamma * p_uniform / (1.0 - p_uniform)
    c = b * t.pow(gamma / 2) * (1 - t).pow(gamma / 2)
    big_c = 1 + c
    c_prime = (gamma / 2) * (1 - 2 * t) / (t * (1 - t)) * c
    return {"alpha": (1 - t) / big_c, "mask": t / big_c, "uniform": c / big_c / support, "c": c, "c_prime": c_prime}


def elbo_weights(t: torch.Tensor, mix: dict, support: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The NELBO's weight of a position whose z_t is x itself, <mask>, or another token (`gidd/loss.py`)."""
    t = t.double()
    c, c_prime = mix["c"], mix["c_prime"]
    on_x = (c + (1 - t) * c_prime) / support / ((1 - t) * (1 - t + c / support))
    on_mask = 1 / ((1 - t) * t)
    on_other = torch.where(c > 0, (c + (1 - t) * c_prime) / ((1 - t) * c.clamp(min=1e-300)), torch.zeros_like(c))
    return on_x, on_mask, on_other


class GiddObjective(Objective):
    name = "gidd"
    Options = GiddOptions
    # a bound (validation bits per byte); hlm's scorers, samplers and exports read absorbing masks only, so
    # this objective trains and validates, and says it does nothing else yet
    capabilities = Capabilities(Attention.BIDIRECTIONAL, Likelihood.BOUND, (), Generation.NONE, Infill.NONE,
                                frozenset(), "NELBO (nats/token)", forbid_mask_prediction=True)  # fmt: skip

    def __init__(self, vocab_size, options: GiddOptions | None = None, **kw):
        super().__init__(vocab_size, options, **kw)
        self.support = vocab_size - len(SPECIAL)  # uniform noise draws the text tokens
        if self.support < 1:
            raise UserError(f"gidd needs text tokens beside the {len(SPECIAL)} special ones (vocab {vocab_size})")
        o = self.options
        # p = 0 with the bound's weights is MDLM's masking: computed as diffusion computes it (the fused CE), so the
        # run is a diffusion run bit for bit (the KL form equals it to float rounding, by test)
        self.masking = None
        if o.p_uniform == 0 and o.loss_weighting == "elbo":
            self.masking = DiffusionObjective(vocab_size, diffusion_eps=o.diffusion_eps, **kw)

    def mixing(self, t: torch.Tensor) -> dict:
        return mixing(t, self.options.p_uniform, self.options.gidd_gamma, self.support)

    def corrupt(self, ids, generator, fraction_done=1.0, train=True, t=None) -> Batch:
        if self.masking is not None:
            return self.masking.corrupt(ids, generator, fraction_done, train, t)
        return self.gidd_batch(ids, generator, train, t)

    def gidd_batch(self, ids, generator, train=True, t=None) -> Batch:
        """The batch in GIDD's form (what `GiddELBO` reads), at any p_uniform."""
        ids = ids[:, :-1]
        B, L = ids.shape
        can = diffusable(ids)
        jacobian = torch.ones(B)
        if t is None:
            t = sample_times(B, generator, self.options.diffusion_eps)
            if self.options.p_uniform > 0 and (not train or self.options.loss_weighting == "elbo"):
                # the bound's integrand grows as 1/sqrt(t) and 1/sqrt(1 - t) at its ends (c_t's derivative): t =
                # sin^2(pi s / 2) with s uniform, weighted by dt/ds, estimates it over all of (0, 1) with bounded
                # terms (uniform t would drop [0, eps), a share of the bound that matters, and weigh heavy tails)
                s = t.double()
                t = (torch.sin(math.pi * s / 2) ** 2).clamp(1e-7, 1 - 1e-6)  # (float64: 1 - t stays positive)
                jacobian = (math.pi * torch.sin(math.pi * s / 2) * torch.cos(math.pi * s / 2)).float()
        mix = {k: v.float() for k, v in self.mixing(t).items()}
        # (the draws of a diffusion run at p = 0: one uniform per position, compared with 1 - alpha)
        noised = (torch.rand(B, L, generator=generator) < 1 - mix["alpha"][:, None]) & can
        z = torch.where(noised, torch.full_like(ids, SPECIAL["mask"]), ids)
        if self.options.p_uniform > 0:  # a noised token is uniform with probability N u / (m + N u)
            share = (self.support * mix["uniform"] / (mix["mask"] + self.support * mix["uniform"]))[:, None]
            uniform = noised & (torch.rand(B, L, generator=generator) < share)
            drawn = torch.randint(len(SPECIAL), self.vocab_size, (B, L), generator=generator)
            z = torch.where(uniform, drawn, z)
        on_x, on_mask, on_other = (w.float()[:, None] for w in elbo_weights(t, self.mixing(t), self.support))
        is_x, is_mask = z == ids, z == SPECIAL["mask"]
        weight = torch.where(is_x, on_x, torch.where(is_mask, on_mask, on_other)) * jacobian[:, None]
        n_tokens = can.sum().clamp(min=1)
        elbo = torch.where(can, weight, torch.zeros_like(weight)) / n_tokens
        trained = self._training_weights(t, weight, is_x, is_mask) / n_tokens if train else elbo
        trained = torch.where(elbo > 0, trained, torch.zeros_like(trained))  # (the bound's positions only)
        noise = torch.stack([mix["alpha"][:, None].expand(B, L), mix["mask"][:, None].expand(B, L),
                             mix["uniform"][:, None].expand(B, L), trained], -1)  # fmt: skip
        return Batch(z, ids, elbo, can, attention=self.attention_of(ids, False), noise=noise)

    def _training_weights(self, t, weight, is_x, is_mask) -> torch.Tensor:
        o = self.options
        if o.loss_weighting == "elbo":
            return weight
        if o.loss_weighting == "clip":
            return weight.clamp(o.gidd_min_loss_weight, o.gidd_max_loss_weight)
        # GIDD's dynamic weights: 1 on uniform noise, 2 on <mask>, a small scale on x itself
        b = 2.0**o.gidd_gamma * o.p_uniform / (1.0 - o.p_uniform)
        log_snr = torch.sigmoid(-t.float()).clamp(-20, 20)[:, None]
        x_scale = b / self.vocab_size * torch.exp(o.gidd_gamma / 2 * log_snr)
        dynamic = torch.where(is_x, x_scale.expand_as(weight), torch.where(is_mask, 2.0, 1.0))
        return dynamic.clamp(o.gidd_min_loss_weight, o.gidd_max_loss_weight)

    def loss_term(self, z_loss: float = 0.0):
        if self.masking is not None:
            return self.masking.loss_term(z_loss)
        if z_loss:
            raise UserError("gidd's loss is a KL over the vocabulary, not a CE: drop --z-loss")
        from hybridlm.losses import GiddELBO

        return GiddELBO(self.support)


def gidd_elbo(logits: torch.Tensor, x: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, support: int):
    """Per position [N]: KL(q_t(.|x) || q_t(.|x_hat)) + r - log r - 1 (before the weight), from the model's logits
    [N, V] (<mask> never predicted), the clean tokens x [N], what the model saw z [N], and each position's
    (alpha, mask share, uniform share per token) in noise [N, >=3]."""
    first = len(SPECIAL)
    # <mask> never predicted: a finite floor (its probability underflows to 0) keeps every gradient finite
    logits = logits.float().index_fill(1, torch.tensor([SPECIAL["mask"]], device=logits.device), -1e9)
    log_x_hat = torch.log_softmax(logits, -1)
    alpha, uniform = noise[:, 0:1].float(), noise[:, 2:3].float()
    log_u = torch.log(uniform)  # -inf where there is no uniform noise
    in_s = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    in_s[first:] = True
    # log p(y) = log(alpha x_hat(y) + u 1[y in S]) for every y; <mask> (equal shares in q and p) adds nothing
    log_p = torch.logaddexp(torch.log(alpha) + log_x_hat, torch.where(in_s, log_u, torch.full_like(log_u, -math.inf)))
    x_in_s = in_s[x]
    log_p_x = log_p.gather(1, x[:, None]).squeeze(1)
    log_q_x = torch.log(alpha[:, 0] + torch.where(x_in_s, uniform[:, 0], torch.zeros_like(uniform[:, 0])))
    kl = torch.exp(log_q_x) * (log_q_x - log_p_x)
    # the other tokens of S: q = u each
    others = torch.where(in_s, log_p, torch.zeros_like(log_p)).sum(1) - torch.where(x_in_s, log_p_x, 0.0 * log_p_x)
    count = support - x_in_s.float()
    kl = kl + torch.where(uniform[:, 0] > 0, uniform[:, 0] * (count * log_u[:, 0] - others), torch.zeros_like(kl))
    # the importance term at z: q(z) / p(z), 0 at <mask>
    masked = z == SPECIAL["mask"]
    z = torch.where(masked, x, z)  # (read as x: finite everywhere, so no nan flows back through the unused branch)
    log_q_z = torch.where(z == x, log_q_x, log_u[:, 0])
    log_ratio = log_q_z - log_p.gather(1, z[:, None]).squeeze(1)
    is_term = torch.where(masked, torch.zeros_like(kl), log_ratio.exp() - log_ratio - 1)
    return kl + is_term

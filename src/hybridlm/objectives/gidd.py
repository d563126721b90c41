"""GIDD (von Rütte et al. 2025, "Generalized Interpolating Discrete Diffusion"): masked diffusion with a share of
uniform noise, so that the model learns to doubt and fix the tokens it sees.

Forward process at t in (0, 1) (GIDD's mask-plus-uniform process, `gidd/diffusion_process.py`):
    q_t(z | x) = alpha_t 1[z = x] + m_t 1[z = <mask>] + u_t 1[z in S],
    c_t = B t^(gamma/2) (1 - t)^(gamma/2), B = 2^gamma p / (1 - p), C_t = 1 + c_t,
    alpha_t = (1 - t) / C_t, m_t = t / C_t, u_t = c_t / (C_t N),
with p = p_uniform and S the N text tokens (hlm's difference from GIDD: uniform noise draws text tokens only,
never <s>, </s>, <pad> or <unk>, which would break documents; GIDD's draws any token but <mask>). p = 0 is MDLM's
log-linear masking exactly (GIDD clamps p to e^-20). p = 1 is uniform-state diffusion (UDLM, Duo's discrete
process) with the log-linear schedule: alpha_t = 1 - t, u_t = t / N, no <mask> at all (not the limit of the
family above, whose bump c_t would be infinite).

Every process here is q_t(z | x) = alpha_t 1[z = x] + (beta pi)_t(z), so one rule gives the bound's weights,
w_t(z) = [(beta pi)_t'(z) - (alpha_t' / alpha_t) (beta pi)_t(z)] / q_t(z | x) (GIDD's Theorem; it gives
`elbo_weights`' closed forms), and one rule the reverse step (`posterior`): p(z_s = y | z_t) is proportional to
q_s(y | x_hat) [alpha_{t|s} 1[y = z_t] + (beta pi)_t(z_t) - alpha_{t|s} (beta pi)_s(z_t)], alpha_{t|s} =
alpha_t / alpha_s: every position may change each round (GIDD's and Duo's ancestral samplers), which the
`denoise` generation (hybridlm.generate) runs. The bound scores sentences as the `gidd-elbo` scorer: the same
terms at a stratified grid of times (one copy per time), so BLiMP, the BabyLM suite, the harness and
perplexity read it as they read diffusion's elbo.

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
from hybridlm.objectives.capabilities import MASKED_LM, Attention, Capabilities, Generation, Infill, Likelihood
from hybridlm.objectives.diffusion import DiffusionObjective, diffusable, sample_times
from hybridlm.scorers import Copy, Scorer, register_scorer

WEIGHTINGS = ("elbo", "dynamic", "clip")
T_LOW, T_HIGH = 1e-7, 1 - 1e-6  # the bound's times, kept inside (0, 1) in float64 (1 - t stays positive)


@dataclass(frozen=True)
class GiddOptions(Options):
    p_uniform: float = option(
        0.0,
        "gidd: the share of uniform noise (GIDD's p_u; 0 = MDLM's masking exactly, 1 = uniform-state diffusion)",
        *in_range(0, 1),
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
    duo_curriculum_end: float = option(
        0.0,
        "gidd at p_uniform 1: Duo's curriculum over this first share of training (0 = off; Duo's runs: 0.2 of 1M "
        "steps): the model reads a tempered softmax of a Gaussian latent whose argmax is the discrete z_t",
        *in_range(0, 1),
    )
    duo_curriculum_start: float = option(0.0, "gidd: Duo's curriculum: the share of training at which its temperature "
                                         "starts to fall (Duo: 0.1)", *in_range(0, 1))  # fmt: skip
    duo_tau_start: float = option(-1.0, "gidd: Duo's curriculum: log10 of the temperature before it falls (Duo: -1)",
                                  *in_range(-10, 10))  # fmt: skip
    duo_tau_end: float = option(-2.0, "gidd: Duo's curriculum: log10 of the temperature at its end (Duo: -2)",
                                *in_range(-10, 10))  # fmt: skip
    duo_gamma_min: float = option(-3.5, "gidd: Duo's curriculum: the Gaussian log-SNR's lowest gamma (Duo: -3.5)",
                                  *in_range(-20, 20))  # fmt: skip
    duo_gamma_max: float = option(-1.75, "gidd: Duo's curriculum: the Gaussian log-SNR's highest gamma (Duo: -1.75)",
                                  *in_range(-20, 20))  # fmt: skip

    def check_together(self):
        if self.gidd_min_loss_weight > self.gidd_max_loss_weight:
            raise UserError("gidd_min_loss_weight must not exceed gidd_max_loss_weight")
        if self.p_uniform == 1 and self.loss_weighting == "dynamic":
            raise UserError("loss_weighting dynamic is GIDD's mask-plus-uniform recipe: p_uniform 1 takes elbo or clip")
        if self.duo_curriculum_end and self.p_uniform != 1:
            raise UserError("duo_curriculum_end is Duo's curriculum for uniform-state noise: add --p-uniform 1")
        if self.duo_curriculum_end and not self.duo_curriculum_start <= self.duo_curriculum_end:
            raise UserError("duo_curriculum_start must not exceed duo_curriculum_end")
        if self.duo_gamma_min >= self.duo_gamma_max:
            raise UserError("duo_gamma_min must be below duo_gamma_max")


def mixing(t: torch.Tensor, p_uniform: float, gamma: float, support: int) -> dict:
    """The process at times t (float64): alpha (x kept), mask (<mask>), uniform (each of the `support` text
    tokens), and the uniform share's c_t with its derivative (GIDD's weights' ingredients)."""
    t = t.double()
    if p_uniform == 1:  # uniform-state: alpha = 1 - t, the rest spread over the text tokens
        return uniform_state(1 - t, -torch.ones_like(t), support)
    b = 2.0**gamma * p_uniform / (1.0 - p_uniform)
    c = b * t.pow(gamma / 2) * (1 - t).pow(gamma / 2)
    big_c = 1 + c
    c_prime = (gamma / 2) * (1 - 2 * t) / (t * (1 - t)) * c
    return {"alpha": (1 - t) / big_c, "mask": t / big_c, "uniform": c / big_c / support, "c": c, "c_prime": c_prime}


def uniform_state(alpha: torch.Tensor, alpha_prime: torch.Tensor, support: int) -> dict:
    """Uniform-state noise with alpha_t and its time derivative (float64): the rest spread over the text tokens."""
    return {
        "alpha": alpha,
        "mask": torch.zeros_like(alpha),
        "uniform": (1 - alpha) / support,
        "alpha_prime": alpha_prime,
    }


def elbo_weights(t: torch.Tensor, mix: dict, support: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The NELBO's weight of a position whose z_t is x itself, <mask>, or another token (`gidd/loss.py`; for
    uniform-state noise the same rule, w = [(beta pi)' - (alpha' / alpha) beta pi] / q = -alpha' / (N alpha q))."""
    t = t.double()
    if "alpha_prime" in mix:
        a, a_prime = mix["alpha"], mix["alpha_prime"]
        on_x = -a_prime / (support * a * (a + (1 - a) / support))
        return on_x, torch.zeros_like(t), -a_prime / (a * (1 - a))
    c, c_prime = mix["c"], mix["c_prime"]
    on_x = (c + (1 - t) * c_prime) / support / ((1 - t) * (1 - t + c / support))
    on_mask = 1 / ((1 - t) * t)
    on_other = torch.where(c > 0, (c + (1 - t) * c_prime) / ((1 - t) * c.clamp(min=1e-300)), torch.zeros_like(c))
    return on_x, on_mask, on_other


def bound_times(n: int, generator, offset: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """n times for the bound (float64) and their weights dt/ds: t = sin^2(pi s / 2), s stratified over (0, 1).
    The integrand grows as 1/sqrt(t) and 1/sqrt(1 - t) at its ends (c_t's derivative); in s its terms are bounded,
    and no share of (0, 1) is left out (uniform t from eps would drop [0, eps))."""
    u = torch.rand((), generator=generator, dtype=torch.float64) if offset else torch.tensor(0.5, dtype=torch.float64)
    s = (u + torch.arange(n, dtype=torch.float64)) / n
    t = (torch.sin(math.pi * s / 2) ** 2).clamp(T_LOW, T_HIGH)
    return t, math.pi * torch.sin(math.pi * s / 2) * torch.cos(math.pi * s / 2)


def duo_alpha(gamma: torch.Tensor, support: int, points: int = 4801) -> torch.Tensor:
    """Duo's map from a Gaussian latent to uniform-state noise (float64): z = argmax(a e_x + s eps) over the N text
    tokens, a = sqrt(sigmoid(-gamma)), s = sqrt(sigmoid(gamma)), is uniform-state noise with alpha = (N I - 1) /
    (N - 1), I = P(z = x) = integral of phi(u) Phi(u + a / s)^(N - 1) du (by quadrature on a fixed grid)."""
    gamma = gamma.double()
    ratio = torch.sqrt(torch.sigmoid(-gamma) / torch.sigmoid(gamma))
    u = torch.linspace(-12, 12, points, dtype=torch.float64)
    log_phi = -0.5 * u**2 - 0.5 * math.log(2 * math.pi)
    integrand = torch.exp(log_phi + (support - 1) * torch.special.log_ndtr(u + ratio[:, None]))
    chance = torch.trapezoid(integrand, u)
    return (support * chance - 1) / (support - 1)


class GiddObjective(Objective):
    name = "gidd"
    Options = GiddOptions
    # a bound (validation bits per byte), scored by its own scorer, generated by its reverse process (every position
    # may change each round), exported as a masked LM (a model without time input)
    capabilities = Capabilities(Attention.BIDIRECTIONAL, Likelihood.BOUND, ("gidd-elbo",), Generation.DENOISE,
                                Infill.IN_PLACE, MASKED_LM, "NELBO (nats/token)",
                                forbid_mask_prediction=True)  # fmt: skip

    def __init__(self, vocab_size, options: GiddOptions | None = None, **kw):
        super().__init__(vocab_size, options, **kw)
        self.support = vocab_size - len(SPECIAL)  # uniform noise draws the text tokens
        if self.support < 1:
            raise UserError(f"gidd needs text tokens beside the {len(SPECIAL)} special ones (vocab {vocab_size})")
        o = self.options
        # p = 0 is MDLM's masking: its bound, scorer and samplers are diffusion's; with the bound's weights it is
        # computed as diffusion computes it (the fused CE), so the run is a diffusion run bit for bit (the KL form
        # equals it to float rounding, by test)
        self.absorbing = (
            DiffusionObjective(vocab_size, diffusion_eps=o.diffusion_eps, **kw) if o.p_uniform == 0 else None
        )
        self.masking = self.absorbing if o.loss_weighting == "elbo" else None
        if self.absorbing is not None:
            self.capabilities = DiffusionObjective.capabilities

    def mixing(self, t: torch.Tensor) -> dict:
        return mixing(t, self.options.p_uniform, self.options.gidd_gamma, self.support)

    def bound(self) -> Objective:
        return self.absorbing if self.absorbing is not None else self

    # ------------------------------------------------------------ training
    def corrupt(self, ids, generator, fraction_done=1.0, train=True, t=None) -> Batch:
        if self.masking is not None:
            return self.masking.corrupt(ids, generator, fraction_done, train, t)
        if train and t is None and fraction_done < self.options.duo_curriculum_end:
            return self.duo_batch(ids, generator, fraction_done)
        return self.gidd_batch(ids, generator, train, t)

    @property
    def reads_soft_inputs(self) -> bool:
        return self.options.duo_curriculum_end > 0

    def duo_temperature(self, fraction_done: float) -> float:
        """Duo's curriculum temperature: 10^tau_start until its start, log-linear to 10^tau_end at its end."""
        o = self.options
        span = o.duo_curriculum_end - o.duo_curriculum_start
        moved = 0.0 if span <= 0 else min(max((fraction_done - o.duo_curriculum_start) / span, 0.0), 1.0)
        return 10.0 ** (o.duo_tau_start + moved * (o.duo_tau_end - o.duo_tau_start))

    def duo_batch(self, ids, generator, fraction_done: float) -> Batch:
        """Duo's curriculum (`duo/algo.py`, DUO.nll, mode simple): a Gaussian latent a e_x + s eps over the text
        tokens at gamma = gamma_min + t (gamma_max - gamma_min); the model reads its softmax at the curriculum's
        temperature; the bound's term reads z_t = its argmax, uniform-state noise with Duo's alpha(gamma)
        (`duo_alpha`) and its derivative in t. Special tokens stay clean (hlm's uniform noise draws text tokens)."""
        o, N, first = self.options, self.support, len(SPECIAL)
        ids = ids[:, :-1]
        B, L = ids.shape
        can = ids >= first
        t = sample_times(B, generator, o.diffusion_eps).double()
        span = o.duo_gamma_max - o.duo_gamma_min
        gamma = o.duo_gamma_min + t * span
        a, s = torch.sigmoid(-gamma).sqrt().float(), torch.sigmoid(gamma).sqrt().float()
        latent = s[:, None, None] * torch.randn(B, L, N, generator=generator)
        latent.scatter_add_(-1, (ids - first).clamp(min=0)[..., None], a[:, None, None].expand(B, L, 1).contiguous())
        z = torch.where(can, latent.argmax(-1) + first, ids)
        soft = torch.zeros(B, L, self.vocab_size)
        soft[..., first:] = torch.softmax(latent / self.duo_temperature(fraction_done), -1)
        soft = torch.where(can[..., None], soft, torch.nn.functional.one_hot(ids, self.vocab_size).float())
        h = 1e-5  # alpha'(t) by a central difference in gamma
        alpha = duo_alpha(gamma, N)
        alpha_prime = (duo_alpha(gamma + h, N) - duo_alpha(gamma - h, N)) / (2 * h) * span
        mix = uniform_state(alpha, alpha_prime, N)
        on_x, _, on_other = (w[:, None] for w in elbo_weights(t, mix, N))
        weight = torch.where(can, torch.where(z == ids, on_x, on_other), torch.zeros_like(on_x)).float()
        n_tokens = can.sum().clamp(min=1)
        trained = self._training_weights(t, weight, z == ids, torch.zeros_like(can)) / n_tokens
        noise = torch.stack([alpha.float()[:, None].expand(B, L), torch.zeros(B, L),
                             mix["uniform"].float()[:, None].expand(B, L), trained], -1)  # fmt: skip
        return Batch(z, ids, weight / n_tokens, can, attention=self.attention_of(ids, False), noise=noise,
                     soft_inputs=soft)  # fmt: skip

    def noised(self, ids: torch.Tensor, t: torch.Tensor, can: torch.Tensor, generator) -> tuple:
        """z_t of ids [B, L] at times t [B] (float64) where `can`, and each position's bound weight (float64)."""
        B, L = ids.shape
        mix = self.mixing(t)
        # (the draws of a diffusion run at p = 0: one uniform per position, compared with 1 - alpha)
        noised = (torch.rand(B, L, generator=generator) < (1 - mix["alpha"].float())[:, None]) & can
        z = torch.where(noised, torch.full_like(ids, SPECIAL["mask"]), ids)
        if self.options.p_uniform > 0:  # a noised token is uniform with probability N u / (m + N u)
            share = (self.support * mix["uniform"] / (mix["mask"] + self.support * mix["uniform"])).float()[:, None]
            uniform = noised & (torch.rand(B, L, generator=generator) < share)
            drawn = torch.randint(len(SPECIAL), self.vocab_size, (B, L), generator=generator)
            z = torch.where(uniform, drawn, z)
        on_x, on_mask, on_other = (w[:, None] for w in elbo_weights(t, mix, self.support))
        weight = torch.where(z == ids, on_x, torch.where(z == SPECIAL["mask"], on_mask, on_other))
        return z, torch.where(can, weight, torch.zeros_like(weight)), mix

    def gidd_batch(self, ids, generator, train=True, t=None) -> Batch:
        """The batch in GIDD's form (what `GiddELBO` reads), at any p_uniform."""
        ids = ids[:, :-1]
        B, L = ids.shape
        can = diffusable(ids)
        jacobian = torch.ones(B, dtype=torch.float64)
        if t is None:
            t = sample_times(B, generator, self.options.diffusion_eps).double()
            if self.options.p_uniform > 0 and (not train or self.options.loss_weighting == "elbo"):
                s = t  # (the stratified draws, in [eps, 1))
                t = (torch.sin(math.pi * s / 2) ** 2).clamp(T_LOW, T_HIGH)
                jacobian = math.pi * torch.sin(math.pi * s / 2) * torch.cos(math.pi * s / 2)
        z, weight, mix = self.noised(ids, t.double(), can, generator)
        weight = (weight * jacobian[:, None]).float()
        n_tokens = can.sum().clamp(min=1)
        elbo = weight / n_tokens
        trained = (
            self._training_weights(t.double(), weight, z == ids, z == SPECIAL["mask"]) / n_tokens if train else elbo
        )
        trained = torch.where(elbo > 0, trained, torch.zeros_like(trained))  # (the bound's positions only)
        noise = torch.stack([mix["alpha"].float()[:, None].expand(B, L), mix["mask"].float()[:, None].expand(B, L),
                             mix["uniform"].float()[:, None].expand(B, L), trained], -1)  # fmt: skip
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

    # ------------------------------------------------------------ scoring: the bound at a grid of times
    def bound_copies(self, index: int, ids: list[int], scored: list[int], times: int, generator) -> list[Copy]:
        """The bound of positions `scored` of ids (the rest clean, given): one copy per time of a stratified grid
        of `times`, reading every scored position with its noise and weight (the KL form, `gidd_term`)."""
        t, jacobian = bound_times(times, generator)
        rows = torch.tensor([ids] * times)
        can = torch.zeros_like(rows, dtype=torch.bool)
        can[:, scored] = True
        z, weight, mix = self.noised(rows, t, can, generator)
        weight = weight * (jacobian / times)[:, None]
        out = []
        for k in range(times):
            a, m, u = (float(mix[key][k]) for key in ("alpha", "mask", "uniform"))
            noise = [(a, m, u, float(weight[k, i])) for i in scored]
            out.append(Copy(index, z[k].tolist(), list(scored), [ids[i] for i in scored], noise=noise))
        return out

    # ------------------------------------------------------------ sampling: the reverse process
    def prior(self, shape, rng) -> torch.Tensor:
        """z_1: every position <mask> (p < 1), or a uniform text token (p = 1), drawn by rng (a RowRandom)."""
        if self.options.p_uniform < 1:
            return torch.full(shape, SPECIAL["mask"], dtype=torch.long, device=rng.seeds.device)
        return len(SPECIAL) + (rng.rand(shape[1:], torch.float64) * self.support).long().clamp_(max=self.support - 1)

    def posterior(self, x_hat: torch.Tensor, z_t: torch.Tensor, t: float, s: float) -> torch.Tensor:
        """p(z_s | z_t) [N, L, V] (float64) from the model's p(x | z_t) x_hat [N, L, V] (no <mask>)."""
        at, as_ = (self.mixing(torch.tensor([v], dtype=torch.float64)) for v in (t, s))
        ratio = float(at["alpha"]) / float(as_["alpha"])
        V, device = x_hat.shape[-1], x_hat.device

        def beta_pi(m):  # (beta pi)(y) for every y: <mask> and the text tokens
            out = torch.zeros(V, dtype=torch.float64, device=device)
            out[SPECIAL["mask"]], out[len(SPECIAL) :] = float(m["mask"]), float(m["uniform"])
            return out

        q_s = float(as_["alpha"]) * x_hat.double() + beta_pi(as_)
        gamma = (beta_pi(at) - ratio * beta_pi(as_)).clamp(min=0)[z_t]  # [N, L]
        post = q_s * gamma[..., None]
        post.scatter_add_(-1, z_t[..., None], ratio * q_s.gather(-1, z_t[..., None]))
        return post / post.sum(-1, keepdim=True)


def gidd_elbo(logits: torch.Tensor, x: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, support: int):
    """Per position [N]: KL(q_t(.|x) || q_t(.|x_hat)) + r - log r - 1 (before the weight), from the model's logits
    [N, V] (<mask> never predicted), the clean tokens x [N], what the model saw z [N], and each position's
    (alpha, mask share, uniform share per token) in noise [N, >=3]. A position without noise (alpha 1: a token CE
    row of a mix) gives -log x_hat(x)."""
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
    noisy = uniform[:, 0] > 0
    kl = kl + torch.where(noisy, uniform[:, 0] * (count * log_u[:, 0] - others), torch.zeros_like(kl))
    # the importance term at z: q(z) / p(z), 0 at <mask> and where there is no uniform noise (its weight is 0)
    skip = (z == SPECIAL["mask"]) | ~noisy
    z = torch.where(skip, x, z)  # (read as x: finite everywhere, so no nan flows back through the unused branch)
    log_q_z = torch.where(z == x, log_q_x, log_u[:, 0])
    log_ratio = log_q_z - log_p.gather(1, z[:, None]).squeeze(1)
    is_term = torch.where(skip, torch.zeros_like(kl), log_ratio.exp() - log_ratio - 1)
    return kl + is_term


def _bound_copies(scorer, lm, index, ids, starts, scored, first, samples, draw_seed):
    """GIDD's bound of the scored tokens: as many times as the elbo scorer has copies (one per token, per sample)."""
    g = torch.Generator().manual_seed(draw_seed)
    return lm.objective.bound().bound_copies(index, ids, scored, max(1, len(scored)) * samples, g)


def _window_copies(scorer, lm, windows, samples, seed):
    """Perplexity's bound: `samples` stratified times per window; position 0 (<s> or carried context) stays clean."""
    g = torch.Generator().manual_seed(seed)
    bound = lm.objective.bound()
    return [
        c for i, w in enumerate(windows) for c in bound.bound_copies(i, list(w), list(range(1, len(w))), samples, g)
    ]


def _term(logits, targets, seen, noise, objective):
    """log-likelihood side of each read: minus its weighted bound term."""
    return -noise[:, 3].double() * gidd_elbo(logits, targets, seen, noise, objective.bound().support).double()


register_scorer(Scorer("gidd-elbo", "bound", False, _bound_copies, window_copies=_window_copies, term=_term))

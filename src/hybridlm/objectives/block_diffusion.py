"""Block diffusion (BD3-LM, Arriola et al. 2025): autoregressive over blocks, masked diffusion within one.

The window is cut into blocks of `block_size` tokens. Each block is corrupted as in MDLM with its
own time t (log-linear: a token is masked with probability t, its term weighted 1/t), and the
model reads x_t ⊕ x_0 in one forward pass: a noisy block sees itself and the clean blocks before
it; a clean block sees itself and the clean blocks before it (`AttentionSpec.block_ids/noisy`;
both copies share their rotary positions). The loss is the sum over blocks of each block's NELBO
given the clean past — an upper bound on the NLL. block_size = 1 with every block masked is next-token
prediction (the masked token reads the clean past); block_size = L is `diffusion`.

Clipped schedules (the paper's variance reduction for training): mask rates t ~ U[noise_clip_min,
noise_clip_max] in training; validation always draws t ~ U(eps, 1), the true bound.

Scoring is the bound of a completion given what precedes it, block by block; generation is
semi-autoregressive with the keys and values of finished blocks cached (hybridlm.samplers),
reversing the log-linear schedule it trains with (the base `Objective.alpha`).
"""

from dataclasses import dataclass

import torch

from hybridlm.errors import UserError
from hybridlm.model import AttentionSpec
from hybridlm.objectives.base import SPECIAL, Batch, Objective, Options, in_range, option
from hybridlm.objectives.capabilities import Attention, Capabilities, Generation, Infill, Likelihood
from hybridlm.objectives.diffusion import diffusable, sample_times, subset_masks
from hybridlm.scorers import Copy, Scorer, register_scorer


@dataclass(frozen=True)
class BlockDiffusionOptions(Options):
    block_size: int = option(4, "block_diffusion: tokens per block (1: next-token prediction; seq_len: diffusion)",
                             *in_range(1, 65536))  # fmt: skip
    diffusion_eps: float = option(1e-3, "diffusion: t ~ U(eps, 1)", *in_range(0, 1, lo_open=True, hi_open=True))
    noise_clip_min: float = option(0.0, "block_diffusion: training mask rates t ~ U[min, max] (BD3-LM's clipping)",
                                   *in_range(0, 1))  # fmt: skip
    noise_clip_max: float = option(1.0, "block_diffusion: training mask rates t ~ U[min, max]", *in_range(0, 1))

    def check_together(self):
        if self.noise_clip_max <= max(self.noise_clip_min, self.diffusion_eps):
            raise UserError(
                f"noise_clip_max ({self.noise_clip_max}) must exceed noise_clip_min ({self.noise_clip_min}) "
                f"and diffusion_eps ({self.diffusion_eps}), e.g. --noise-clip-min 0.3 --noise-clip-max 0.8"
            )


class BlockDiffusionObjective(Objective):
    name = "block_diffusion"
    Options = BlockDiffusionOptions
    two_stream = True
    # a bound; infilling and exports would need what transformers cannot hold (two streams, block masks)
    capabilities = Capabilities(Attention.BLOCK, Likelihood.BOUND, ("block-elbo",), Generation.BLOCKS,
                                Infill.NONE, frozenset(), "NELBO (nats/token)",
                                forbid_mask_prediction=True)  # fmt: skip

    @property
    def block_size(self) -> int:
        return self.options.block_size

    def block_ids(self, length: int) -> torch.Tensor:
        """The block of each of positions 0..length-1."""
        return torch.arange(length) // self.block_size

    # ------------------------------------------------------------ training
    def block_times(self, rows: int, n_blocks: int, generator, train: bool) -> torch.Tensor:
        """[rows, n_blocks] mask rates, stratified over all blocks of the batch; clipped in training."""
        eps = self.options.diffusion_eps
        t = sample_times(rows * n_blocks, generator, eps).view(n_blocks, rows).t()  # strata spread over rows
        low, high = max(self.options.noise_clip_min, eps), self.options.noise_clip_max
        if train and (low, high) != (eps, 1.0):
            t = low + (high - low) * (t - eps) / (1 - eps)
        return t

    def corrupt(self, ids, generator, fraction_done=1.0, train=True, t=None) -> Batch:
        """t: [B] (one time per row) or [B, n_blocks]; None draws one per block."""
        x0 = ids[:, :-1]
        B, L = x0.shape
        blocks = self.block_ids(L)
        n_blocks = int(blocks[-1]) + 1
        if t is None:
            t = self.block_times(B, n_blocks, generator, train)
        t = t[:, None].expand(B, n_blocks) if t.dim() == 1 else t
        t_token = t[:, blocks]
        can = diffusable(x0)
        mask = (torch.rand(B, L, generator=generator) < t_token) & can
        weights = torch.where(mask, 1 / t_token, torch.zeros_like(t_token)) / can.sum().clamp(min=1)
        noisy = torch.where(mask, torch.full_like(x0, SPECIAL["mask"]), x0)
        return self._two_streams(noisy, x0, weights, can, blocks)

    def _two_streams(self, noisy, x0, weights, can, blocks) -> Batch:
        B, L = x0.shape
        doc = self._doc_ids(x0)
        attention = AttentionSpec(
            torch.zeros(B, dtype=torch.bool),
            None if doc is None else torch.cat([doc, doc], 1),
            block_ids=torch.cat([blocks, blocks]),
            noisy=torch.cat([torch.ones(L, dtype=torch.bool), torch.zeros(L, dtype=torch.bool)]),
            position_ids=torch.cat([torch.arange(L), torch.arange(L)]),
        )
        zeros = torch.zeros_like(weights)
        return Batch(
            torch.cat([noisy, x0], 1),
            torch.cat([x0, x0], 1),
            torch.cat([weights, zeros], 1),
            torch.cat([can, torch.zeros_like(can)], 1),
            attention,
        )

    # ------------------------------------------------------------ scoring
    def block_subsets(self, positions: list[int], generator, samples: int = 1) -> list[tuple]:
        """The bound of `positions` block by block: per block, (its end, its positions, masks over
        them, weights), each block's bound in the exact-in-k form of diffusion's `subset_masks`."""
        out = []
        by_block: dict[int, list[int]] = {}
        for p in positions:
            by_block.setdefault(p // self.block_size, []).append(p)
        for block, members in sorted(by_block.items()):
            out.append(((block + 1) * self.block_size, members, *subset_masks(len(members), generator, samples)))
        return out


# ---------------------------------------------------------------- its scorer
def _block_bound_copies(scorer, lm, index, ids, starts, scored, first, samples, draw_seed):
    """Block diffusion's bound, block by block: each block's scored tokens by subset size, the copy cut
    after that block (what comes later is never seen), everything before it clean."""
    g = torch.Generator().manual_seed(draw_seed)
    out = []
    for end, members, masks, weights in lm.objective.bound().block_subsets(scored, g, samples):
        for mask, w in zip(masks, weights.tolist()):
            chosen = [members[j] for j in mask.nonzero().flatten().tolist()]
            masked = list(ids[:end])
            for j in chosen:
                masked[j] = lm.mask_id
            out.append(Copy(index, masked, chosen, [ids[j] for j in chosen], w))
    return out


register_scorer(Scorer("block-elbo", "bound", False, _block_bound_copies, forbid_mask=True))

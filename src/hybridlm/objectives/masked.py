"""Masked LM with span masking and BERT-style 80/10/10 corruption (mask / random token / keep).

Spans have a length uniform in 1..max_span; the masked fraction follows a linear schedule
(GPT-BERT anneals 30% -> 15%); each span's tokens are all masked, all random or all kept.
"""

from dataclasses import dataclass

import torch

from hybridlm.objectives.base import SPECIAL, Batch, Objective, Options, in_range, maskable, mean_weights, option
from hybridlm.objectives.capabilities import MASKED_LM, Attention, Capabilities, Generation, Infill, Likelihood


def _start_rate(p: float, max_span: int) -> float:
    """The per-position span-start probability q whose spans cover a fraction p of positions.

    A position is uncovered when no span starting 0..max_span-1 places earlier reaches it:
    P(uncovered) = prod_d (1 - q * P(len > d)); solved for q by bisection.
    """
    lo, hi = 0.0, 1.0
    for _ in range(50):
        q = (lo + hi) / 2
        uncovered = 1.0
        for d in range(max_span):
            uncovered *= 1 - q * (max_span - d) / max_span
        lo, hi = (q, hi) if 1 - uncovered < p else (lo, q)
    return (lo + hi) / 2


def span_mask(ids, rate: float, generator, max_span: int = 3, mask_p=0.8, random_p=0.1, vocab_size=None):
    """Corrupt `ids` ([B, T]); returns (corrupted ids, bool mask of the positions to predict)."""
    B, T = ids.shape
    can = maskable(ids)
    q = _start_rate(rate, max_span)
    starts = (torch.rand(B, T, generator=generator) < q) & can
    lengths = torch.randint(1, max_span + 1, (B, T), generator=generator)
    action = torch.rand(B, T, generator=generator)  # one draw per span start
    # span_of[i] = the latest span start covering i (or -1); spans never cross special tokens' masking
    span_of = torch.full((B, T), -1, dtype=torch.long)
    pos = torch.arange(T)
    for d in reversed(range(max_span)):  # the nearest start wins, so assign the farthest first
        src = pos - d
        ok = src >= 0
        cover = torch.zeros(B, T, dtype=torch.bool)
        cover[:, ok] = starts[:, src[ok]] & (lengths[:, src[ok]] > d)
        span_of = torch.where(cover, src.expand(B, T), span_of)
    mask = (span_of >= 0) & can
    span_action = torch.gather(action, 1, span_of.clamp(min=0))
    corrupted = ids.clone()
    to_mask = mask & (span_action < mask_p)
    to_random = mask & (span_action >= mask_p) & (span_action < mask_p + random_p)
    corrupted[to_mask] = SPECIAL["mask"]
    if vocab_size is not None:
        rand_tokens = torch.randint(len(SPECIAL), vocab_size, (B, T), generator=generator)
        corrupted[to_random] = rand_tokens[to_random]
    return corrupted, mask


def mask_rate(fraction_done: float, start: float, end: float) -> float:
    """Linear anneal from `start` at fraction_done 0 to `end` at 1."""
    fraction_done = min(max(fraction_done, 0.0), 1.0)
    return start + (end - start) * fraction_done


@dataclass(frozen=True)
class SpanMaskingOptions(Options):
    """Span masking (GPT-BERT): the masked fraction annealed linearly from start to end."""

    mask_ratio_start: float = option(
        0.3, "masked fraction at the start of training (annealed linearly)", *in_range(0, 1, lo_open=True, hi_open=True)
    )
    mask_ratio_end: float = option(
        0.15, "masked fraction at the end of training (and in validation)", *in_range(0, 1, lo_open=True, hi_open=True)
    )
    max_span: int = option(3, "spans are 1..max_span tokens long", *in_range(1, 64))

    def rate(self, fraction_done: float, train: bool) -> float:
        return mask_rate(fraction_done, self.mask_ratio_start, self.mask_ratio_end) if train else self.mask_ratio_end


class MaskedObjective(Objective):
    name = "masked"
    Options = SpanMaskingOptions
    capabilities = Capabilities(Attention.BIDIRECTIONAL, Likelihood.NONE, ("pll", "pll-word"), Generation.NONE,
                                Infill.IN_PLACE, MASKED_LM, "masked CE")  # fmt: skip

    def corrupt(self, ids, generator, fraction_done=1.0, train=True) -> Batch:
        ids = ids[:, :-1]  # windows are L+1 long for the shifted objectives; BERT predicts in place
        o = self.options
        corrupted, mask = span_mask(
            ids, o.rate(fraction_done, train), generator, o.max_span, vocab_size=self.vocab_size
        )
        return Batch(
            input_ids=corrupted,
            targets=ids,
            loss_weights=mean_weights(mask),
            token_mask=mask,
            attention=self.attention_of(ids, causal=False),
        )

"""Masked LM with span masking and BERT-style 80/10/10 corruption (mask / random token / keep).

Spans have a length uniform in 1..max_span; the masked fraction follows a linear schedule
(GPT-BERT anneals 30% -> 15%); each span's tokens are all masked, all random or all kept.
"""

import torch

from hybridlm.errors import UserError
from hybridlm.objectives.base import SPECIAL, Batch, Objective, maskable


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


def mask_rate(progress: float, start: float, end: float) -> float:
    """Linear anneal from `start` at progress 0 to `end` at progress 1."""
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress


class MaskedObjective(Objective):
    name = "masked"
    config_keys = ("mask_ratio_start", "mask_ratio_end", "max_span")
    attention = "bidirectional"
    likelihood = None  # masked CE: not a likelihood of the text
    loss_label = "masked CE"
    scorers = ("pll", "pll-word")
    perplexity_scorers = ("pll",)
    generation = None
    infill_shift = 0
    export_causal_lm = False
    export_masked_lm = ""

    def __init__(self, vocab_size, mask_ratio_start=0.3, mask_ratio_end=0.15, max_span=3, **kw):
        super().__init__(vocab_size, **kw)
        self.mask_ratio_start, self.mask_ratio_end, self.max_span = mask_ratio_start, mask_ratio_end, max_span

    @classmethod
    def check_config(cls, cfg):
        check_span_options(cfg)

    def rate(self, progress, train):
        return mask_rate(progress, self.mask_ratio_start, self.mask_ratio_end) if train else self.mask_ratio_end

    def corrupt(self, ids, generator, progress=1.0, train=True) -> Batch:
        ids = ids[:, :-1]  # windows are L+1 long for the shifted objectives; BERT predicts in place
        corrupted, mask = span_mask(ids, self.rate(progress, train), generator, self.max_span, vocab_size=self.vocab_size)
        w = mask.float()
        return Batch(
            input_ids=corrupted,
            targets=ids,
            loss_weights=w / w.sum().clamp(min=1),
            is_causal=torch.zeros(len(ids), dtype=torch.bool),
            token_mask=mask,
            document_ids=self._doc_ids(ids),
        )


def check_span_options(cfg):
    """The span-masking options shared by the masked and hybrid objectives."""
    for name in ("mask_ratio_start", "mask_ratio_end"):
        if not 0 < getattr(cfg, name) < 1:
            raise UserError(f"{name} must lie in (0, 1) (got {getattr(cfg, name)})")
    if not 1 <= cfg.max_span <= 64:
        raise UserError(f"max_span must lie in 1..64 (got {cfg.max_span})")

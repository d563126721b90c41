"""Masked LM with span masking and BERT-style 80/10/10 corruption (mask / random token / keep).

What is masked (`masking`): spans of 1..max_span tokens (GPT-BERT; SpanBERT draws lengths too),
whole words (BERT's whole-word masking: a word's tokens are masked together), or n-grams of
1..max_span whole words (ERNIE / SpanBERT n-gram masking). A word begins at a token the tokenizer
marks as starting one (byte-level BPE: a leading "Ġ", the space before a word; WordPiece: no "##").
How much (`mask_ratio`): GPT-BERT's linear schedule from mask_ratio_start to mask_ratio_end
(`schedule`), the end value throughout (`fixed`), or a ratio drawn per sequence
(`uniform:A,B`, `beta:A,B`; cf. "Mask more and mask later", Ankner et al. 2024). Each span's
tokens are all masked, all random or all kept; the loss is the mean CE over the masked tokens of
the batch, whatever each sequence's ratio.
"""

import re
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import betaincinv

from hybridlm.errors import UserError
from hybridlm.objectives.base import (
    SPECIAL,
    Batch,
    Objective,
    Options,
    in_range,
    maskable,
    mean_weights,
    one_of,
    option,
)
from hybridlm.objectives.capabilities import MASKED_LM, Attention, Capabilities, Generation, Infill, Likelihood
from hybridlm.tokenizer import load_tokenizer


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


def span_mask(ids, rate, generator, max_span: int = 3, mask_p=0.8, random_p=0.1, vocab_size=None, words=None):
    """Corrupt `ids` ([B, T]); returns (corrupted ids, bool mask of the positions to predict).

    rate: the fraction to mask, one float or one per row ([B] tensor). words: None (spans of tokens),
    or [B, T] the word index (0..T) of each token (spans of whole words; rate is then a fraction of words)."""
    B, T = ids.shape
    can = maskable(ids)
    if isinstance(rate, torch.Tensor):
        q = torch.tensor([_start_rate(r, max_span) for r in rate.tolist()])[:, None]
    else:
        q = _start_rate(rate, max_span)
    # span starts, lengths and actions are drawn per unit: a token, or a word (W = T + 1 indices hold every word)
    W = T if words is None else T + 1
    unit_can = can if words is None else torch.ones(B, W, dtype=torch.bool)
    starts = (torch.rand(B, W, generator=generator) < q) & unit_can
    lengths = torch.randint(1, max_span + 1, (B, W), generator=generator)
    action = torch.rand(B, W, generator=generator)  # one draw per span start
    # span_of[i] = the latest span start covering unit i (or -1); spans never cross special tokens' masking
    span_of = torch.full((B, W), -1, dtype=torch.long)
    pos = torch.arange(W)
    for d in reversed(range(max_span)):  # the nearest start wins, so assign the farthest first
        src = pos - d
        ok = src >= 0
        cover = torch.zeros(B, W, dtype=torch.bool)
        cover[:, ok] = starts[:, src[ok]] & (lengths[:, src[ok]] > d)
        span_of = torch.where(cover, src.expand(B, W), span_of)
    if words is not None:  # each token takes its word's span: a word is masked whole or not at all
        span_of = torch.gather(span_of, 1, words)
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


MASKINGS = ("span", "whole-word", "ngram")
_RATIO = re.compile(r"(uniform|beta):([0-9.eE+-]+),([0-9.eE+-]+)")


def _ratio_ok(text: str) -> bool:
    if text in ("schedule", "fixed"):
        return True
    m = _RATIO.fullmatch(text)
    try:
        a, b = float(m.group(2)), float(m.group(3))
    except (AttributeError, ValueError):
        return False
    return 0 < a < b < 1 if m.group(1) == "uniform" else BETA_RANGE[0] <= a <= BETA_RANGE[1] >= b >= BETA_RANGE[0]


BETA_RANGE = (0.01, 1000.0)  # beyond it the draws are all 0, all 1 or not a number: nothing (or all) is masked
NOTHING_MASKED = 0.01  # the largest share of batches with nothing to predict that a masking may leave


@dataclass(frozen=True)
class SpanMaskingOptions(Options):
    """What is masked and how much (span masking with GPT-BERT's schedule by default)."""

    mask_ratio_start: float = option(
        0.3, "masked fraction at the start of training (annealed linearly)", *in_range(0, 1, lo_open=True, hi_open=True)
    )
    mask_ratio_end: float = option(
        0.15, "masked fraction at the end of training (and in validation)", *in_range(0, 1, lo_open=True, hi_open=True)
    )
    max_span: int = option(3, "spans are 1..max_span tokens long (ngram masking: words)", *in_range(1, 64))
    masking: str = option(
        "span", "span (1..max_span tokens), whole-word (BERT) or ngram (1..max_span whole words)", *one_of(*MASKINGS)
    )
    mask_ratio: str = option(
        "schedule",
        "schedule (mask_ratio_start -> mask_ratio_end), fixed (mask_ratio_end), or drawn per sequence: "
        "uniform:A,B or beta:A,B",
        check=_ratio_ok,
        rule=f"be schedule, fixed, uniform:A,B (0 < A < B < 1) or beta:A,B (A, B in {BETA_RANGE[0]} ... "
        f"{BETA_RANGE[1]:g})",
    )

    def check_window(self, seq_len: int, batch_size: int) -> None:
        """Spans too long for the window mask nothing in most rows: refused when more than 1% of batches (at the
        lowest ratio) would have nothing to predict. Words are counted as one per two tokens, at the least."""
        width = 1 if self.masking == "whole-word" else self.max_span
        units = seq_len if self.masking == "span" else max(1, seq_len // 2)
        lowest = self.lowest_rate()
        none = (1 - _start_rate(lowest, width)) ** (units * batch_size)
        if none > NOTHING_MASKED:
            raise UserError(
                f"{self.masking} masking of 1..{width} {'tokens' if self.masking == 'span' else 'words'} at a ratio of "
                f"{lowest:.3g} leaves {none:.0%} of batches of {batch_size} x {seq_len} tokens with nothing masked; "
                "lower --max-span, or train on longer windows or larger batches"
            )

    def lowest_rate(self) -> float:
        """The smallest ratio training uses (a drawn ratio's 5th percentile)."""
        if self.mask_ratio == "fixed":
            return self.mask_ratio_end
        if self.mask_ratio == "schedule":
            return min(self.mask_ratio_start, self.mask_ratio_end)
        kind, a, b = _RATIO.fullmatch(self.mask_ratio).groups()
        return float(a) if kind == "uniform" else max(1e-3, float(betaincinv(float(a), float(b), 0.05)))

    def rate(self, fraction_done: float, train: bool, rows: int = 1, generator=None):
        """The fraction to mask: a float, or one per row ([rows] tensor) for a drawn ratio in training."""
        if not train or self.mask_ratio == "fixed":
            return self.mask_ratio_end
        if self.mask_ratio == "schedule":
            return mask_rate(fraction_done, self.mask_ratio_start, self.mask_ratio_end)
        kind, a, b = _RATIO.fullmatch(self.mask_ratio).groups()
        u = torch.rand(rows, generator=generator, dtype=torch.float64)
        if kind == "uniform":
            return float(a) + (float(b) - float(a)) * u
        return torch.from_numpy(np.asarray(betaincinv(float(a), float(b), u.numpy()))).clamp(1e-3, 0.999)

    def mask(self, ids, fraction_done, train, generator, vocab_size, begins_word=None):
        """(corrupted ids, mask) of `ids` by these options."""
        words = None
        if self.masking != "span":
            if begins_word is None:
                raise UserError(f"{self.masking} masking needs the tokenizer's word starts (train with --data)")
            words = torch.cumsum(begins_word[ids].long(), 1)  # 0: the end of a word begun before the window
        width = 1 if self.masking == "whole-word" else self.max_span
        rate = self.rate(fraction_done, train, len(ids), generator)
        return span_mask(ids, rate, generator, width, vocab_size=vocab_size, words=words)


def word_starts_for(options: SpanMaskingOptions, data_dir) -> torch.Tensor | None:
    """The word starts whole-word and n-gram masking need, from the data's tokenizer (None for spans)."""
    return word_starts_of(load_tokenizer(data_dir)) if data_dir is not None and options.masking != "span" else None


def word_starts_of(tokenizer) -> torch.Tensor:
    """[vocab] bool: which tokens begin a word (byte-level BPE: "Ġ" first; WordPiece: no "##";
    special tokens are words of their own)."""
    wordpiece = type(tokenizer.model).__name__ == "WordPiece"
    out = torch.ones(tokenizer.get_vocab_size(), dtype=torch.bool)
    for token, i in tokenizer.get_vocab().items():
        if i >= len(SPECIAL):
            out[i] = not token.startswith("##") if wordpiece else token.startswith("Ġ")
    return out


class MaskedObjective(Objective):
    name = "masked"
    Options = SpanMaskingOptions
    capabilities = Capabilities(Attention.BIDIRECTIONAL, Likelihood.NONE, ("pll", "pll-word"), Generation.MASKS,
                                Infill.IN_PLACE, MASKED_LM, "masked CE")  # fmt: skip

    def __init__(self, vocab_size, options=None, begins_word=None, **kw):
        super().__init__(vocab_size, options, **kw)
        self.begins_word = begins_word  # [vocab] bool, for whole-word and n-gram masking

    @classmethod
    def from_config(cls, cfg, vocab_size, data_dir=None):
        options = cls.read_options(cfg.options)
        return cls(vocab_size, options, begins_word=word_starts_for(options, data_dir), document_mask=cfg.document_mask)

    def corrupt(self, ids, generator, fraction_done=1.0, train=True) -> Batch:
        ids = ids[:, :-1]  # windows are L+1 long for the shifted objectives; BERT predicts in place
        corrupted, mask = self.options.mask(ids, fraction_done, train, generator, self.vocab_size, self.begins_word)
        return Batch(
            input_ids=corrupted,
            targets=ids,
            loss_weights=mean_weights(mask),
            token_mask=mask,
            attention=self.attention_of(ids, causal=False),
        )

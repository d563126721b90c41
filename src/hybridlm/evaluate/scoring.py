"""Sentence log-likelihoods (or their bounds) for every objective, through one batched engine.

Each scorer turns a sentence into "copies": an input sequence, the positions to read, the token
expected at each, and a weight. The engine sorts all copies by length, batches them (PLL's n
masked copies of a sentence run together, never one forward per copy), and returns per sentence
sum(weight * log p(target at position)). Scoring is fp32 by default (log p = logit - logsumexp,
summed in fp64); batches stay small (2,048 tokens), which is faster on CPU caches. BOS is always
prepended and never scored.

- causal: sum_i log p(x_i | <s> x_<i).
- pll / pll-word: pseudo-log-likelihood (Salazar et al.): mask x_i, read it at i; "-word" also
  masks the rest of x_i's word to the right (Kauf & Ivanova's within_word_l2r).
- mntp / mntp-word: GPT-BERT's masked next-token form: mask x_i, read it at position i-1.
- fused: causal + mntp.
- prefix: a prefix LM's reading of a completion: the context (with <s>) is a bidirectional prefix,
  the completion is scored left to right after it (for whole sentences: causal).
- block-elbo: block diffusion's bound, the elbo of each block given the clean blocks before it.
- elbo: the masked-diffusion NELBO, by the diffusion objective's `subset_masks` (exact in the
  number of masked tokens, one random subset per k from a fixed seed per sentence length, so both
  sentences of a pair share their random numbers); the <mask> token is never a prediction
  (SUBS). Reported as -NELBO.

Each is a `Scorer` record in the registry (`evaluate/scorers.py`); which scorers a model has, and
its default, is its objective's answer (`capabilities.scorers`, plus the sums of those: fused).
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from hybridlm.errors import UserError
from hybridlm.evaluate.lm import ScoringLM
from hybridlm.evaluate.scorers import SCORERS, Copy, Scorer, masked_copies  # noqa: F401 (re-exported)


def _copies(
    scorer: Scorer,
    lm: ScoringLM,
    index: int,
    text: str,
    samples: int = 1,
    seed: int = 0,
    completion_start: int = 0,
    draw_seed: int | None = None,
) -> list[Copy]:
    """The copies that score `text` (all of it), or only its completion: the tokens whose character
    span ends after `completion_start` (the official BabyLM rule), with everything before visible."""
    if completion_start:
        toks, starts, offsets = lm.tokenize_offsets(text)
    else:
        toks, starts = lm.tokenize(text)
    if not toks:
        return []
    first = (
        next((i for i, (_, end) in enumerate(offsets) if end > completion_start), len(toks)) if completion_start else 0
    )
    if completion_start and len(toks) + 1 > lm.max_len and len(toks) - first + 1 < lm.max_len:
        # a context longer than the model's: keep the completion and the nearest context after <s>
        cut = len(toks) + 1 - lm.max_len
        toks, starts, first = toks[cut:], starts[cut:], first - cut
    ids = [lm.bos_id] + list(toks)
    starts = [True] + list(starts)
    n = len(ids)
    if n > lm.max_len:
        raise UserError(f"a text of {n} tokens is longer than the model's {lm.max_len}: {text[:60]!r}")
    scored = list(range(first + 1, n))
    if not scored:
        return []
    # random draws (a bound) seeded by length (sentences of equal length, a minimal pair usually, share
    # their masks) or by the item, so that every option of a completion item has the same draws
    draw_seed = 1_000_003 * n + seed if draw_seed is None else draw_seed
    return scorer.copies(scorer, lm, index, ids, starts, scored, first, samples, draw_seed)


def check_scorer(lm: ScoringLM, scorer: str | None) -> str:
    scorer = scorer or lm.scorers[0]
    if scorer not in SCORERS:
        raise UserError(f"unknown scorer {scorer!r} (choose one of: {', '.join(SCORERS)})")
    if scorer not in lm.scorers:
        raise UserError(
            f"scorer {scorer!r} needs another kind of model: this {lm.kind} model supports {', '.join(lm.scorers)}"
        )
    return scorer


def score_sentences(
    lm: ScoringLM,
    sentences: list[str],
    scorer: str | None = None,
    max_batch_tokens: int = 2048,
    samples: int = 1,
    progress: bool = False,
) -> list[float]:
    """Per sentence: total log-likelihood (causal), PLL, MNTP, fused, or -NELBO (elbo), in nats."""
    return score_completions(lm, [(s, 0, None) for s in sentences], scorer, max_batch_tokens, samples, progress)


def score_completions(
    lm: ScoringLM,
    texts: list[tuple[str, int, int | None]],
    scorer: str | None = None,
    max_batch_tokens: int = 2048,
    samples: int = 1,
    progress: bool = False,
) -> list[float]:
    """Per (text, completion_start, draw_seed): the score of the text's completion (from character
    completion_start; 0: the whole text) given what comes before it, after an explicit <s>."""
    scorer = SCORERS[check_scorer(lm, scorer)]
    if scorer.parts:
        parts = [score_completions(lm, texts, p, max_batch_tokens, samples, progress) for p in scorer.parts]
        return [sum(values) for values in zip(*parts)]
    copies = [
        c
        for i, (text, start, seed) in enumerate(texts)
        for c in _copies(scorer, lm, i, text, samples, completion_start=start, draw_seed=seed)
    ]
    block_size = lm.objective.block_size if scorer.blocks else 0
    return score_copies(
        lm, copies, len(texts), scorer.causal, scorer.forbid_mask, max_batch_tokens, progress, scorer.name, block_size
    )


@torch.no_grad()
def score_copies(
    lm: ScoringLM,
    copies: list[Copy],
    n_items: int,
    is_causal: bool,
    forbid_mask: bool = False,
    max_batch_tokens: int = 2048,
    progress: bool = False,
    desc: str = "score",
    block_size: int = 0,
    greedy: bool = False,
) -> list[float] | tuple[list[float], list[bool]]:
    """sum(weight * log p(target)) per item, over copies batched by length (block_size: the copies
    attend block by block, block diffusion's rule). greedy: also whether every target of the item
    is its prediction's argmax (lm-evaluation-harness's is_greedy)."""
    copies = sorted(copies, key=lambda c: len(c.ids))
    totals = torch.zeros(n_items, dtype=torch.float64)
    missed = torch.zeros(n_items, dtype=torch.long)  # targets that are not the argmax
    bar = tqdm(total=len(copies), disable=not progress, desc=desc, unit="seq")
    start = 0
    while start < len(copies):
        end = start + 1
        while end < len(copies) and len(copies[end].ids) * (end - start + 1) <= max_batch_tokens:
            end += 1
        chunk = copies[start:end]
        width = len(chunk[-1].ids)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        select = torch.zeros(len(chunk), width, dtype=torch.bool)
        lengths = torch.tensor([len(c.ids) for c in chunk])
        for r, c in enumerate(chunk):
            ids[r, : len(c.ids)] = torch.tensor(c.ids)
            select[r, c.positions] = True
        prefix = torch.tensor([c.prefix for c in chunk]) if any(c.prefix for c in chunk) else None
        blocks = {"block_size": block_size} if block_size else {}  # (ScoringLMs without block attention)
        logits = lm.selected_logits(ids, lengths, is_causal, select, prefix, **blocks)
        if forbid_mask:
            logits[:, lm.mask_id] = float("-inf")
        # rows of `select` in order give the positions of each copy in order (positions are sorted)
        targets = torch.tensor([t for c in chunk for _, t in sorted(zip(c.positions, c.targets))])
        # log p(target) = logit - logsumexp in fp32 (no full log-softmax tensor), summed in fp64
        picked = (logits[torch.arange(len(targets)), targets] - torch.logsumexp(logits, -1)).double()
        owner = torch.tensor([c.sentence for c in chunk for _ in c.positions])
        weight = torch.tensor([c.weight for c in chunk for _ in c.positions], dtype=torch.float64)
        totals.index_add_(0, owner, picked * weight)
        if greedy:
            missed.index_add_(0, owner, (logits.argmax(-1) != targets).long())
        bar.update(len(chunk))
        start = end
    bar.close()
    return (totals.tolist(), (missed == 0).tolist()) if greedy else totals.tolist()

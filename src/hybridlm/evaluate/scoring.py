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

Each is a `Scorer` record in the registry (`hybridlm/scorers.py`; an objective may register its own,
as block diffusion does); which scorers a model has, and its default, is its objective's answer
(`capabilities.scorers`, plus the sums of those: fused); how the copies attend, the objective's
(`Objective.inference_attention`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from tqdm import tqdm

from hybridlm.errors import UserError
from hybridlm.evaluate.lm import ScoringLM
from hybridlm.model import AttentionSpec
from hybridlm.scorers import SCORERS, Copy, Scorer, masked_copies  # noqa: F401 (re-exported)


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


def no_scorer(kind: str) -> UserError:
    return UserError(f"a {kind} model has no sentence scorer yet (hlm scores texts by token CEs; its bound is a KL)")


def check_scorer(lm: ScoringLM, scorer: str | None) -> str:
    if not lm.scorers:
        raise no_scorer(lm.kind)
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
    return score_copies(
        lm, copies, len(texts), scorer.causal, scorer.forbid_mask, max_batch_tokens, progress, scorer.name,
        term=scorer.term,
    )  # fmt: skip


SHARED_PREFIX = 16  # tokens that copies must share before their prefix is computed once for all of them
# a packed row's length at most this times its longest copy: its attention runs over every branch (a dense
# mask, no causal skip), so rows much longer than a copy cost more in attention than the prefix saves
ROW_CAP = 1.5


@dataclass
class _Row:
    """One input row: a copy, or a shared prefix followed by the rests of the copies that begin with it."""

    ids: list[int]
    reads: list[int]  # positions read (a prefix's last one repeats: it predicts the first token of each branch)
    targets: list[int]
    owners: list[int]
    weights: list[float]
    prefix: int = 0
    segments: list[int] | None = None  # AttentionSpec.segment_ids: 0 = the shared prefix, k = branch k
    positions: list[int] | None = None  # each token's position in its own copy
    context: int = 0  # Copy.context
    noise: list[tuple] | None = None  # Copy.noise


def _row(c: Copy) -> _Row:
    n = len(c.positions)
    return _Row(c.ids, list(c.positions), list(c.targets), [c.sentence] * n, [c.weight] * n, c.prefix,
                context=c.context, noise=c.noise)  # fmt: skip


def _common_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _pack(group: list[Copy], shared: int) -> _Row:
    """The copies of `group` (which begin with the same `shared` tokens) in one row: the prefix once, then
    each copy's rest as a branch that sees the prefix and itself, at the positions it has alone."""
    row = _Row(list(group[0].ids[:shared]), [], [], [], [], segments=[0] * shared, positions=list(range(shared)))
    for k, c in enumerate(group, 1):
        start = len(row.ids)
        row.ids += c.ids[shared:]
        row.segments += [k] * (len(c.ids) - shared)
        row.positions += range(shared, len(c.ids))
        row.reads += [p if p < shared else start + p - shared for p in c.positions]
        row.targets += c.targets
        row.owners += [c.sentence] * len(c.positions)
        row.weights += [c.weight] * len(c.positions)
    return row


def share_prefixes(copies: list[Copy], max_len: int) -> list[_Row]:
    """Causal copies that begin with the same SHARED_PREFIX or more tokens (the options of an item, after
    their common context) packed in rows of at most max_len tokens: a causal model's states over a prefix
    do not depend on what follows it, so it is computed once and every score stays what it was alone."""
    ordered = sorted(copies, key=lambda c: c.ids)  # copies with a common prefix are neighbours
    rows, i = [], 0
    while i < len(ordered):
        first, group, shared = ordered[i], [ordered[i]], len(ordered[i].ids)
        longest = shared
        while i + len(group) < len(ordered):
            nxt = ordered[i + len(group)]
            common = min(shared, _common_length(first.ids, nxt.ids))
            grown = common + sum(len(c.ids) - common for c in group) + len(nxt.ids) - common
            longest = max(longest, len(nxt.ids))
            if common < SHARED_PREFIX or first.prefix or nxt.prefix or grown > min(max_len, ROW_CAP * longest):
                break
            group.append(nxt)
            shared = common
        rows.append(_pack(group, shared) if len(group) > 1 else _row(first))
        i += len(group)
    return rows


def _attention(lm: ScoringLM, chunk: list[_Row], width: int, lengths: torch.Tensor, is_causal: bool) -> AttentionSpec:
    """How a batch of rows attends: the objective's rule for copies in this mode, padding kept apart in
    bidirectional rows (its own "document"), prefixes, and shared-prefix branches."""
    spec = lm.objective.inference_attention(is_causal, width)
    if not is_causal:  # padding trails each row: causal rows never see it
        spec = replace(spec, document_ids=(torch.arange(width)[None] >= lengths[:, None]).int())
    if any(r.prefix for r in chunk):
        spec = replace(spec, prefix_lengths=torch.tensor([r.prefix for r in chunk]))
    if any(r.segments for r in chunk):
        segments = torch.full((len(chunk), width), -1, dtype=torch.long)  # padding: a branch of its own
        positions = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, row in enumerate(chunk):
            n = len(row.ids)
            segments[r, :n] = torch.tensor(row.segments or [0] * n)
            positions[r, :n] = torch.tensor(row.positions or range(n))
        spec = replace(spec, segment_ids=segments, position_ids=positions)
    return spec


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
    greedy: bool = False,
    share_prefix: bool = True,
    cfg_scale: float = 0.0,
    term=None,
) -> list[float] | tuple[list[float], list[bool]]:
    """sum(weight * log p(target)) per item, over copies batched by length; the copies attend as the
    model's objective says copies in that mode do (`Objective.inference_attention`: block diffusion's
    blocks, e.g.). greedy: also whether every target of the item is its prediction's argmax
    (lm-evaluation-harness's is_greedy). share_prefix: causal copies with a common prefix compute it once
    (`share_prefixes`; models that take AttentionSpec.segment_ids). cfg_scale w: unsupervised classifier-free
    guidance as LLaDA's get_log_likelihood applies it, u + (w + 1)(c - u), u read with each copy's context
    (after <s>) masked."""
    plain = all(x is None for x in lm.objective.inference_attention(is_causal, 1).per_position())
    if share_prefix and is_causal and plain and lm.shares_prefixes:  # (an objective's own rule: copies kept whole)
        rows = share_prefixes(copies, lm.max_len)
    else:
        rows = [_row(c) for c in copies]
    rows.sort(key=lambda r: len(r.ids))
    totals = torch.zeros(n_items, dtype=torch.float64)
    missed = torch.zeros(n_items, dtype=torch.long)  # targets that are not the argmax
    bar = tqdm(total=len(copies), disable=not progress, desc=desc, unit="seq")
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and len(rows[end].ids) * (end - start + 1) <= max_batch_tokens:
            end += 1
        chunk = rows[start:end]
        width = len(chunk[-1].ids)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        select = torch.zeros(len(chunk), width, dtype=torch.bool)
        lengths = torch.tensor([len(r.ids) for r in chunk])
        for r, row in enumerate(chunk):
            ids[r, : len(row.ids)] = torch.tensor(row.ids)
            select[r, row.reads] = True
        attention = _attention(lm, chunk, width, lengths, is_causal)
        logits = lm.selected_logits(ids, lengths, attention, select)
        if cfg_scale:
            where_ = torch.arange(width)[None]
            hide = (where_ > 0) & (where_ < torch.tensor([r.context for r in chunk])[:, None])
            uncond = lm.selected_logits(ids.masked_fill(hide, lm.mask_id), lengths, attention, select)
            logits = uncond + (cfg_scale + 1) * (logits - uncond)
        if forbid_mask:
            logits[:, lm.mask_id] = float("-inf")
        # each read's row in `logits` (the selected positions in row-major order; a position read twice is one row)
        rank = select.flatten().cumsum(0) - 1
        where = rank[torch.tensor([r * width + p for r, row in enumerate(chunk) for p in row.reads])]
        targets = torch.tensor([t for row in chunk for t in row.targets])
        where_on, targets_on = where.to(logits.device), targets.to(logits.device)  # the scores stay on the device
        if term is not None:  # the scorer's own term, from each read's logits, token seen and noise
            seen = torch.tensor([row.ids[p] for row in chunk for p in row.reads], device=logits.device)
            noise = torch.tensor([n for row in chunk for n in row.noise], dtype=torch.float64, device=logits.device)
            picked = term(logits[where_on], targets_on, seen, noise, lm.objective).double().cpu()
        else:  # log p(target) = logit - logsumexp in fp32 (no full log-softmax tensor), summed in fp64
            picked = (logits[where_on, targets_on] - torch.logsumexp(logits, -1)[where_on]).double().cpu()
        owner = torch.tensor([o for row in chunk for o in row.owners])
        weight = torch.tensor([w for row in chunk for w in row.weights], dtype=torch.float64)
        totals.index_add_(0, owner, picked * weight)
        if greedy:
            missed.index_add_(0, owner, (logits.argmax(-1)[where_on] != targets_on).long().cpu())
        bar.update(sum(1 if not row.segments else max(row.segments) for row in chunk))
        start = end
    bar.close()
    return (totals.tolist(), (missed == 0).tolist()) if greedy else totals.tolist()

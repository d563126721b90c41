"""The scorer registry: each way hlm scores a text is a `Scorer` record (the copies it runs, in which
mode they attend, what their sum means), registered by name in `SCORERS`; `register_scorer` adds one
(an objective's own scorer is registered in its file: block diffusion's `block-elbo`). Which
scorers a model has is its objective's answer (`capabilities.scorers`) plus every sum of scorers
whose parts it has (`available_scorers`: fused = causal + mntp)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Copy:
    sentence: int
    ids: list[int]
    positions: list[int]
    targets: list[int]
    weight: float = 1.0
    prefix: int = 0  # positions seen bidirectionally by a causal copy (prefix LM)
    context: int = 0  # the first positions are the prompt (what classifier-free guidance masks, after <s>)
    noise: list[tuple] | None = None  # per read, what the scorer's `term` reads beside the logits (GIDD's shares)


def masked_copies(
    index: int, ids: list[int], starts: list[bool], positions, mask_id: int, shift: int = 0, whole_word: bool = False
) -> list[Copy]:
    """PLL / within-word PLL / MNTP: for each position i, a copy with x_i masked, read at i - shift
    (0: in place, BERT; 1: at i-1, GPT-BERT's masked next-token form). whole_word: also mask the rest
    of x_i's word to the right (Kauf & Ivanova's within_word_l2r)."""
    out = []
    for i in positions:
        masked = list(ids)
        masked[i] = mask_id
        j = i + 1
        while whole_word and j < len(ids) and not starts[j]:
            masked[j] = mask_id
            j += 1
        out.append(Copy(index, masked, [i - shift], [ids[i]]))
    return out


@dataclass(frozen=True)
class Scorer:
    """A way to score a text: the copies it runs, how they attend, what their sum means.

    copies(scorer, lm, index, ids, starts, scored, first, samples, draw_seed): the copies that score
    positions `scored` of `ids` (<s> first; positions up to `first` are the visible context)."""

    name: str
    measure: str  # "exact" (a log-likelihood), "pseudo" (a pseudo-log-likelihood) or "bound" (-NELBO)
    causal: bool  # its copies read with causal attention
    copies: Callable | None = None
    shift: int = 0  # masked copies: read position i's prediction at i - shift
    whole_word: bool = False  # masked copies: also mask the rest of the word to the right
    forbid_mask: bool = False  # <mask> is never a prediction (MDLM's SUBS)
    parts: tuple[str, ...] = ()  # a sum of other scorers' scores (fused)
    prefix: bool = False  # causal copies read their context (with <s>) bidirectionally: a prefix LM
    # perplexity's copies of whole windows, when not `copies` over every token:
    # window_copies(scorer, lm, windows, samples, seed) -> list[Copy]
    window_copies: Callable | None = None
    # a bound that is not a sum of log p(target) (GIDD's KL form): term(logits [N, V], targets [N], seen [N] (the
    # token at each read), noise [N, K] (the copies' `noise`), objective) -> each read's share of the score [N]
    term: Callable | None = None


def _causal_copies(scorer, lm, index, ids, starts, scored, first, samples, draw_seed):
    prefix = first + 1 if scorer.prefix else 0
    return [Copy(index, ids, [i - 1 for i in scored], [ids[i] for i in scored], prefix=prefix)]


def _masked_copies(scorer, lm, index, ids, starts, scored, first, samples, draw_seed):
    return masked_copies(index, ids, starts, scored, lm.mask_id, shift=scorer.shift, whole_word=scorer.whole_word)


def _bound_copies(scorer, lm, index, ids, starts, scored, first, samples, draw_seed):
    """The diffusion objective's bound by subset size, over the scored tokens only (see `subset_masks`)."""
    g = torch.Generator().manual_seed(draw_seed)
    bound = lm.objective.bound()
    masks, weights = bound.subset_masks(len(scored), g, samples)
    shift = bound.bound_shift  # a diffusion model in a causal model's layout reads i-1
    out = []
    for mask, w in zip(masks, weights.tolist()):
        chosen = [scored[j] for j in mask.nonzero().flatten().tolist()]
        masked = list(ids)
        for j in chosen:
            masked[j] = lm.mask_id
        out.append(Copy(index, masked, [j - shift for j in chosen], [ids[j] for j in chosen], w))
    return out


def _time_bound_copies(scorer, lm, windows, samples, seed):
    """Perplexity's NELBO by Monte Carlo over t: `samples` stratified times per window, masks and weights from
    the diffusion objective's forward process (the run's own schedule); position 0 of a window (<s>, or
    context carried from the previous window) is never masked."""
    bound = lm.objective.bound()
    g = torch.Generator().manual_seed(seed)
    copies = []
    for wi, w in enumerate(windows):
        t = bound.bound_times(samples, g)
        rows = torch.tensor([w[1:]] * samples)
        mask, weight = bound.time_mask(rows, t, g, can=torch.ones_like(rows, dtype=torch.bool))
        for s in range(samples):
            chosen = (mask[s].nonzero().flatten() + 1).tolist()
            if chosen:
                masked = [lm.mask_id if j in set(chosen) else tok for j, tok in enumerate(w)]
                read = [j - bound.bound_shift for j in chosen]  # a diffusion model in a causal layout reads i-1
                copies.append(Copy(wi, masked, read, [w[j] for j in chosen], float(weight[s, 0]) / samples))
    return copies


SCORERS: dict[str, Scorer] = {}


def register_scorer(scorer: Scorer) -> Scorer:
    """Make `scorer` available by name (to objectives' capabilities, --scorer and perplexity)."""
    SCORERS[scorer.name] = scorer
    return scorer


for _scorer in (
    Scorer("causal", "exact", True, _causal_copies),
    Scorer("pll", "pseudo", False, _masked_copies),
    Scorer("pll-word", "pseudo", False, _masked_copies, whole_word=True),
    Scorer("mntp", "pseudo", False, _masked_copies, shift=1),
    Scorer("mntp-word", "pseudo", False, _masked_copies, shift=1, whole_word=True),
    Scorer("fused", "pseudo", False, parts=("causal", "mntp")),
    Scorer("elbo", "bound", False, _bound_copies, forbid_mask=True, window_copies=_time_bound_copies),
    Scorer("prefix", "exact", True, _causal_copies, prefix=True),
):
    register_scorer(_scorer)


def available_scorers(capabilities) -> tuple[str, ...]:
    """An objective's scorers (its default first), then every sum of scorers whose parts it has (fused)."""
    own = capabilities.scorers
    return own + tuple(n for n, s in SCORERS.items() if s.parts and n not in own and all(p in own for p in s.parts))

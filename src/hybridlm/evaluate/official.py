"""`--convention official`: the numbers the official BabyLM 2025 pipeline prints, for runs and local
HF models, on each of its backends (`babylm/evaluation-pipeline-2025`; `tests/evaluate/
test_pipeline_conformance.py` runs that pipeline on hlm's exports and compares task by task).

Read from the pipeline's source; what differs from hlm's own convention:
- Texts are tokenized with the tokenizer's own special tokens (a run: the tokenizer its export
  writes, which adds <s> first, so the two conventions see the same ids).
- Completion tokens are those whose character span ends after len(text) - len(completion) (for
  causal, plus the first token's start); the first token is never scored by causal, nor by mntp
  (which reads token i at position i-1).
- Backends: `causal` (hlm's causal scorer), `mlm` (each completion token masked alone, read in place:
  hlm's pll), `mntp` (read at i-1: hlm's mntp). The others (within-word PLL, the diffusion bound,
  fused, prefix) are hlm's own: the pipeline has no backend for them.
- A tie is counted correct (the pipeline's torch.max picks the first option, the right one).
- Reading: the probability of the word's first token right after the context (for mlm/mntp: the
  context with three <mask> appended, read at the first mask / the token before it), each further
  token after the context extended by the decoded tokens before it, the word without a leading
  space; hlm's convention scores " word" as the completion of its context instead.
"""

from __future__ import annotations

from hybridlm.errors import UserError
from hybridlm.evaluate.scoring import Copy, score_copies

BACKENDS = {"causal": "causal", "pll": "mlm", "mntp": "mntp"}  # hlm scorer -> the pipeline's backend
READING_MASKS = 3  # the pipeline's --number_of_mask_tokens_to_append


def backend_for(scorer: str) -> str:
    if scorer not in BACKENDS:
        raise UserError(
            f"the official BabyLM pipeline has no backend for the {scorer} scorer (its backends: causal, "
            f"mlm = pll, mntp); score it with --convention hlm"
        )
    return BACKENDS[scorer]


def _encode(lm, tok, text: str):
    enc = tok(text, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if len(ids) > lm.max_len:
        raise UserError(f"a text of {len(ids)} tokens is longer than the model's {lm.max_len}: {text[:60]!r}")
    return ids, offsets


def _mask_id(lm, tok) -> int:
    if tok.mask_token_id is None:
        raise UserError(f"{lm.name}: the tokenizer has no mask token, which the mlm and mntp backends need")
    return tok.mask_token_id


def _completion_copies(lm, tok, index: int, text: str, start: int, backend: str) -> list[Copy]:
    """The pipeline's `process_{causal,mlm,mntp}_sentences` for one text whose completion starts at
    character `start`."""
    ids, offsets = _encode(lm, tok, text)
    if backend == "causal":
        first = start + offsets[0][0]
        scored = [j for j, (_, end) in enumerate(offsets) if end > first and j >= 1]
        return [Copy(index, ids, [j - 1 for j in scored], [ids[j] for j in scored])]
    mask = _mask_id(lm, tok)
    scored = [j for j, (_, end) in enumerate(offsets) if end > start]
    shift = 1 if backend == "mntp" else 0
    if shift and 0 in scored:
        if tok.cls_token_id is None and tok.bos_token_id is None:
            scored.remove(0)  # the pipeline never scores a first token it cannot read one position earlier
        else:  # it would read index -1 (the last padded position): refuse rather than imitate
            raise UserError(f"{lm.name}: the mntp backend needs a tokenizer that adds its BOS/CLS token first")
    out = []
    for j in scored:
        masked = list(ids)
        masked[j] = mask
        out.append(Copy(index, masked, [j - shift], [ids[j]]))
    return out


def completion_scores(lm, texts: list[tuple[str, int, object]], backend: str, progress: bool = False) -> list[float]:
    """Per (text, completion start, _): the summed log-probability of the completion as the official
    backend computes it (fp32 logits; sums in fp64)."""
    tok = lm.pipeline_tokenizer()
    copies = [
        c for i, (text, start, _) in enumerate(texts) for c in _completion_copies(lm, tok, i, text, start, backend)
    ]
    return score_copies(lm, copies, len(texts), backend == "causal", progress=progress, desc=f"official {backend}")


def _next_token_copy(lm, tok, index: int, context: str, target: int, backend: str) -> Copy:
    """The pipeline's reading `get_p` / `get_p_mlm` / `get_p_mntp`: log p(`target`) right after `context`."""
    if backend == "causal":
        ids, _ = _encode(lm, tok, context)
        return Copy(index, ids, [len(ids) - 1], [target])
    mask = _mask_id(lm, tok)
    ids, _ = _encode(lm, tok, context + tok.mask_token * READING_MASKS)
    from_end = READING_MASKS + (1 if backend == "mntp" else 0) + (0 if ids[-1] == mask else 1)
    return Copy(index, ids, [len(ids) - from_end], [target])


def _first_token(tok, piece: str) -> int:
    ids = tok(piece, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UserError(f"reading data: the word {piece!r} has no tokens")
    return ids[0]


def reading_copies(lm, tok, index: int, context: str, word: str, backend: str) -> list[Copy]:
    """The pipeline's `get_p2*`: the word's first token after the context, then each further token
    (the first token of its decoded text) after the context extended by the decoded tokens before
    it; their log-probabilities summed."""
    target = tok(word, add_special_tokens=False)["input_ids"]
    if not target:
        raise UserError(f"reading data: the word {word!r} has no tokens")
    copies = [_next_token_copy(lm, tok, index, context, target[0], backend)]
    context += tok.decode(target[0])
    for t in target[1:]:
        piece = tok.decode(t)
        copies.append(_next_token_copy(lm, tok, index, context, _first_token(tok, piece), backend))
        context += piece
    return copies


def reading_scores(lm, pairs: list[tuple[str, str]], backend: str, progress: bool = False) -> list[float]:
    """log p(word | context) per (context, word), as the pipeline's reading task computes it (`reading/run.py`)."""
    tok = lm.pipeline_tokenizer()
    copies = [c for i, (context, word) in enumerate(pairs) for c in reading_copies(lm, tok, i, context, word, backend)]
    desc = f"official {backend} reading"
    return score_copies(lm, copies, len(pairs), backend == "causal", progress=progress, desc=desc)

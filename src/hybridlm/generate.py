"""Sampling: causal decoding with a KV cache, diffusion's iterative unmasking (hybridlm.samplers),
block diffusion block by block with the finished blocks cached, and infilling.

Categoricals are sampled in float64 (a float32 Gumbel lowers the effective temperature).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hybridlm.errors import UserError
from hybridlm.model import AttentionSpec, KVCache
from hybridlm.objectives import Generation, Infill
from hybridlm.samplers import Sampling, denoise, region_steps
from hybridlm.tokenizer import BOS, EOS, MASK


def filter_logits(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    """Probabilities (float64) after temperature, top-k, top-p (nucleus) and min-p filtering."""
    logits = logits.double()
    if temperature <= 0:  # greedy
        out = torch.zeros_like(logits)
        out.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        return out
    probs = torch.softmax(logits / temperature, -1)
    if top_k and top_k < probs.shape[-1]:
        kth = probs.topk(top_k, -1).values[..., -1:]
        probs = torch.where(probs < kth, torch.zeros_like(probs), probs)
    if min_p > 0:
        probs = torch.where(probs < min_p * probs.max(-1, keepdim=True).values, torch.zeros_like(probs), probs)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop = cum - sorted_p > top_p * cum[..., -1:]  # keep the smallest prefix reaching top_p
        sorted_p = torch.where(drop, torch.zeros_like(sorted_p), sorted_p)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return probs / probs.sum(-1, keepdim=True)


def _forbid(logits, ids):
    logits[..., ids] = float("-inf")
    return logits


@torch.no_grad()
def causal_rows(
    model,
    prompt_ids: list[int],
    rows: int = 1,
    max_new_tokens=50,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    use_cache=True,
    stop_ids=(),
    forbid_ids=(),
    generator=None,
    prompt_as_prefix=False,
) -> tuple[list[list[int]], int]:
    """Autoregressive sampling of `rows` continuations of one prompt in one batch: (the new token ids
    of each, up to its stop token; the network calls). prompt_as_prefix: the prompt is read
    bidirectionally (a prefix LM), what follows it left to right."""
    limit = model.cfg.max_seq_len
    ids = list(prompt_ids)[-limit:]
    attention = AttentionSpec(True, prefix_lengths=torch.tensor([len(ids)] * rows) if prompt_as_prefix else None)
    caches = [KVCache() for _ in model.blocks] if use_cache else None
    seq = torch.tensor([ids] * rows)
    x, pos, calls = seq, 0, 0
    new: list[list[int]] = [[] for _ in range(rows)]
    done = torch.zeros(rows, dtype=torch.bool)
    for _ in range(min(max_new_tokens, limit - len(ids))):
        if use_cache:
            logits = model.head(model(x, attention, kv_caches=caches, start_pos=pos)[:, -1])
            pos += x.shape[1]
        else:
            logits = model.head(model(seq, attention)[:, -1])
        calls += 1
        probs = filter_logits(_forbid(logits.float(), list(forbid_ids)), temperature, top_k, top_p, min_p)
        tok = torch.multinomial(probs, 1, generator=generator)
        for r, t in enumerate(tok.flatten().tolist()):
            if not done[r]:
                done[r] = t in stop_ids
                if not done[r]:
                    new[r].append(t)
        if done.all():
            break
        seq, x = torch.cat([seq, tok], 1), tok
    return new, calls


def generate_causal(model, prompt_ids: list[int], max_new_tokens=50, **kw) -> list[int]:
    """One continuation of the prompt (see causal_rows): its new token ids."""
    return causal_rows(model, prompt_ids, 1, max_new_tokens, **kw)[0][0]


def _probabilities(logits: torch.Tensor, forbid: list[int], sampling: Sampling, shift: int = 0) -> torch.Tensor:
    logits = logits.float()
    if shift:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], 1)  # position i is predicted at i-1
    return filter_logits(_forbid(logits, forbid), **sampling.filters)


@torch.no_grad()
def unmask_rows(
    model,
    objective,
    x: torch.Tensor,
    mask_id: int,
    sampling: Sampling,
    generator,
    forbid_ids=(),
    shift: int = 0,
    use_cache: bool = True,
    stop_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the <mask> tokens of the canvas x [N, T] with the objective's way of generating: the whole
    canvas at once (or in semi-autoregressive blocks of sampling.block_length) for a diffusion model,
    block by block with the finished blocks' keys and values cached for block diffusion (stopping after
    the block where every row has produced stop_id). Returns (the canvas, network calls per row)."""
    sampling.check()
    x = x.clone()
    forbid = list(forbid_ids) + [mask_id]
    nfe = torch.zeros(len(x), dtype=torch.long)
    masked = (x == mask_id).any(0).nonzero().flatten()
    if len(masked) == 0:
        return x, nfe
    first, T = int(masked[0]), x.shape[1]
    alpha = objective.alpha
    if objective.capabilities.generation is not Generation.BLOCKS:
        length = sampling.block_length or T - first
        starts = range(first, T, length)
        steps = region_steps(sampling.steps, len(starts))
        for start in starts:
            end = min(start + length, T) if sampling.block_length else T
            lo = 0 if not sampling.block_length else start  # one region: every <mask> of the canvas

            def predict(rows, lo=lo, end=end):
                return _probabilities(model(x[rows], False, logits=True), forbid, sampling, shift)[:, lo:end]

            denoise(predict, x, lo, end, mask_id, sampling, alpha, generator, steps, nfe)
        return x, nfe

    size = objective.block_size
    begin = first // size * size  # the block holding the first <mask>; earlier blocks are context
    starts = range(begin, T, size)
    steps = region_steps(sampling.steps, len(starts))
    caches = [KVCache() for _ in model.blocks] if use_cache else None
    if use_cache and begin:
        model(x[:, :begin], objective.inference_attention(False, begin), kv_caches=caches)
        nfe += 1
    for start in starts:
        end = min(start + size, T)

        def predict(rows, start=start, end=end):
            if not use_cache:
                spec = objective.inference_attention(False, end)
                return _probabilities(model(x[rows, :end], spec, logits=True), forbid, sampling)[:, start:end]
            for cache in caches:
                cache.rows, cache.commit = (None if len(rows) == len(x) else rows), False
            try:
                logits = model(x[rows, start:end], False, kv_caches=caches, start_pos=start, logits=True)
            finally:
                for cache in caches:
                    cache.rows, cache.commit = None, True
            return _probabilities(logits, forbid, sampling)

        denoise(predict, x, start, end, mask_id, sampling, alpha, generator, steps, nfe)
        if use_cache and end < T:  # the finished block's keys and values, for the blocks after it
            model(x[:, start:end], False, kv_caches=caches, start_pos=start)
            nfe += 1
        if stop_id is not None and (x[:, first:end] == stop_id).any(1).all():
            return x[:, :end], nfe
    return x, nfe


def _stop_and_forbid(tok):
    specials = [tok.token_to_id(t) for t in ("<pad>", BOS, EOS, MASK, "<unk>")]
    return [tok.token_to_id(EOS), tok.token_to_id(BOS)], specials


def sampling_of(sampler=None, steps=32, order=None, **knobs) -> Sampling:
    """A Sampling from keyword knobs; `order` is the older name (confidence, or random = ancestral)."""
    if sampler is None:
        sampler = {"random": "ancestral", None: "confidence"}.get(order, order)
    return Sampling(sampler=sampler, steps=steps, **knobs).check()


@dataclass
class Samples:
    """What `generate_samples` drew: per sample the new token ids (up to a stop), its text and its
    network calls; the wall time of the whole batch."""

    token_ids: list[list[int]]
    texts: list[str]
    nfe: list[int]
    seconds: float


def generate_samples(
    run, prompt: str, max_new_tokens: int, sampling: Sampling, num_samples: int = 1, seed: int = 0, use_cache=True
) -> Samples:
    """num_samples continuations of `prompt` in one batch, in the mode the objective supports."""
    tok, model, objective = run.tokenizer, run.model, run.objective
    g = torch.Generator().manual_seed(seed)
    stop, specials = _stop_and_forbid(tok)
    prompt_ids = [tok.token_to_id(BOS)] + (tok.encode(prompt, add_special_tokens=False).ids if prompt else [])
    caps = objective.capabilities
    t0 = time.perf_counter()
    if caps.generation is Generation.CAUSAL:
        new, calls = causal_rows(
            model,
            prompt_ids,
            num_samples,
            max_new_tokens,
            stop_ids=stop,
            forbid_ids=[i for i in specials if i not in stop],
            generator=g,
            prompt_as_prefix=caps.prompt_as_prefix,
            use_cache=use_cache,
            **sampling.filters,
        )
        nfe = [calls] * num_samples
    elif caps.generation in (Generation.UNMASK, Generation.BLOCKS):
        mask = tok.token_to_id(MASK)
        n = min(max_new_tokens, model.cfg.max_seq_len - len(prompt_ids))
        canvas = torch.tensor([prompt_ids + [mask] * n] * num_samples)
        blocks = caps.generation is Generation.BLOCKS
        # a fixed-length answer for diffusion (no special token inside it); block diffusion may end its text
        forbid = [i for i in specials if i != stop[0]] if blocks else specials
        out, calls = unmask_rows(
            model, objective, canvas, mask, sampling, g, forbid, caps.infill.shift or 0, use_cache,
            stop_id=stop[0] if blocks else None,
        )  # fmt: skip
        new = [cut_at_stop(row[len(prompt_ids) :], stop) for row in out.tolist()]
        nfe = calls.tolist()
    else:
        check_generates(objective)
    seconds = time.perf_counter() - t0
    return Samples(new, [_continuation(tok, prompt_ids, ids) for ids in new], nfe, seconds)


def check_generates(objective) -> None:
    """Refuse, in one line, an objective that cannot generate."""
    caps = objective.capabilities
    if caps.generation is Generation.NONE:
        raise UserError(
            f"a {objective.name} model does not generate text; use hlm infill"
            if caps.infill is not Infill.NONE
            else f"a {objective.name} model does not generate text"
        )


def cut_at_stop(ids: list[int], stops) -> list[int]:
    """The tokens before the first of `stops`."""
    return next((ids[:i] for i, t in enumerate(ids) if t in stops), ids)


def _continuation(tok, prompt_ids, new) -> str:
    # decoded together with the prompt: a first token that continues the prompt's last word stays
    # attached to it, and one that starts a new word keeps its space
    before, after = tok.decode(prompt_ids[1:]), tok.decode(prompt_ids[1:] + new)
    return after[len(before) :] if after.startswith(before) else " " + tok.decode(new)


def generate_text(run, prompt: str, max_new_tokens=50, steps=32, order=None, seed=0, sampler=None, **knobs) -> str:
    """The continuation of `prompt` (prompt + result is the text), in the mode the objective supports."""
    sampling = sampling_of(sampler, steps, order, **knobs)
    return generate_samples(run, prompt, max_new_tokens, sampling, 1, seed).texts[0]


def infill_text(run, text: str, span: int = 1, steps=None, order=None, seed=0, sampler=None, **knobs) -> str:
    """Fill each <mask> in `text` (each stands for `span` tokens)."""
    tok, model, objective = run.tokenizer, run.model, run.objective
    if objective.capabilities.infill is Infill.NONE:
        raise UserError(f"a {objective.name} model cannot fill masks; use hlm generate, or a model trained to unmask")
    if MASK not in text:
        raise UserError("the text has no <mask> to fill, e.g. --text 'The <mask> sat on the <mask>.'")
    mask = tok.token_to_id(MASK)
    ids = [tok.token_to_id(BOS)]
    for k, piece in enumerate(text.split(MASK)):
        if k:
            ids += [mask] * span
        piece = piece.strip()
        if piece:
            ids += tok.encode(piece, add_special_tokens=False).ids
    if len(ids) > model.cfg.max_seq_len:
        raise UserError(f"the text is {len(ids)} tokens, longer than the model's {model.cfg.max_seq_len}")
    _, specials = _stop_and_forbid(tok)
    sampling = sampling_of(sampler, steps or ids.count(mask), order, **knobs)
    g = torch.Generator().manual_seed(seed)
    out, _ = unmask_rows(model, objective, torch.tensor([ids]), mask, sampling, g, specials,
                         objective.capabilities.infill.shift)  # fmt: skip
    return tok.decode(out[0, 1:].tolist()).strip()


def sample_text(run, prompt: str, infill_template: str, max_new_tokens: int, seed: int = 0, **sampling) -> str:
    """A sample to show (demo, report): the prompt and its continuation where the objective
    generates, the template's <mask>s filled where it only infills (greedily)."""
    caps = run.objective.capabilities
    if caps.generation is not Generation.NONE:
        return (
            prompt
            + generate_text(
                run, prompt, max_new_tokens=max_new_tokens, steps=max_new_tokens, seed=seed, **sampling
            ).rstrip()
        )
    if caps.infill is not Infill.NONE:
        return infill_text(run, infill_template, temperature=0.0, seed=seed, sampler=sampling.get("sampler")).strip()
    return "(this objective neither generates nor infills)"

"""Sampling: causal decoding with a KV cache, diffusion's iterative unmasking (hybridlm.samplers),
block diffusion block by block with the finished blocks cached, and infilling.

Full-attention diffusion decodes fast as Fast-dLLM does: threshold rounds (samplers.Sampling), and
over semi-autoregressive blocks an approximate cache (`CanvasDecoder`: prefix or dual, refreshed at
each block and every `cache_refresh` rounds), and LLaDA's unsupervised classifier-free guidance.
Each sample draws from its own random stream (samplers.RowRandom): sample i of a seed is the same text
whatever the batch. Categoricals are sampled in float64 (a float32 Gumbel lowers the effective temperature).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from hybridlm.errors import UserError
from hybridlm.model import AttentionSpec, CanvasCache, KVCache
from hybridlm.objectives import Generation, Infill
from hybridlm.samplers import (
    MAX_STEPS,
    RANKED,
    RowRandom,
    Sampling,
    denoise,
    filter_logits,
    filter_probs,
    region_steps,
    reveal_scores,
)
from hybridlm.tokenizer import BOS, EOS, MASK


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
    min_new_tokens=0,
) -> tuple[list[list[int]], int]:
    """Autoregressive sampling of `rows` continuations of one prompt in one batch: (the new token ids
    of each, up to its stop token; the network calls). prompt_as_prefix: the prompt is read
    bidirectionally (a prefix LM), what follows it left to right. generator: a RowRandom (row r draws
    from its own stream) or a torch.Generator (its seed seeds the rows). No stop token is drawn before
    min_new_tokens.

    Past the model's window (max_seq_len) the window slides: when it is full, its last half is read again
    from position 0 (as a training window that starts inside a text) and decoding goes on from there, so
    a sample can be any length; within the first window nothing changes."""
    limit, device = model.cfg.max_seq_len, _device(model)
    keep = max(1, limit // 2)
    rng = RowRandom.of(generator if generator is not None else torch.Generator().manual_seed(0), rows, device)
    ids = list(prompt_ids)[-limit:]
    seq = torch.tensor([ids] * rows, device=device)
    anchor, pos, calls = 0, 0, 0  # the window is seq[:, anchor:]; pos: the positions cached
    caches = None
    new: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows

    def attention():
        prefix = max(0, len(ids) - anchor) if prompt_as_prefix else 0  # the prompt's part still in the window
        return AttentionSpec(True, prefix_lengths=torch.tensor([prefix] * rows, device=device) if prefix else None)

    for step in range(max_new_tokens):
        if seq.shape[1] - anchor > limit:  # the window is full: re-read its last half from position 0
            anchor, caches = seq.shape[1] - keep, None
        if not use_cache:
            logits = model.head(model(seq[:, anchor:], attention())[:, -1])
        elif caches is None:
            caches = [KVCache() for _ in model.blocks]
            logits = model.head(model(seq[:, anchor:], attention(), kv_caches=caches)[:, -1])
            pos = seq.shape[1] - anchor
        else:
            logits = model.head(model(seq[:, -1:], attention(), kv_caches=caches, start_pos=pos)[:, -1])
            pos += 1
        calls += 1
        forbid = [*forbid_ids, *stop_ids] if step < min_new_tokens else forbid_ids
        tok = _append_drawn(logits, forbid, (temperature, top_k, top_p, min_p), rng, stop_ids, new, done)
        if all(done):
            break
        seq = torch.cat([seq, tok], 1)
    return new, calls


def _append_drawn(logits, forbid, filters: tuple, rng: RowRandom, stop_ids, new: list, done: list) -> torch.Tensor:
    """Each row's next token [N, 1], drawn from logits [N, V] (forbidden ids removed, then filtered); appended to
    its row of `new` until the row draws a stop token (which ends it: `done`)."""
    tok = rng.draw(filter_logits(_forbid(logits.float(), list(forbid)), *filters)[:, None])
    for r, t in enumerate(tok.flatten().tolist()):
        if not done[r]:
            done[r] = t in stop_ids
            if not done[r]:
                new[r].append(t)
    return tok


MASK_WINDOW = 4  # <mask> tokens after the text when a masked LM generates: the text visibly goes on


@torch.no_grad()
def masked_rows(
    model,
    prompt_ids: list[int],
    mask_id: int,
    rows: int = 1,
    max_new_tokens=50,
    shift: int = 0,
    sampling: Sampling | None = None,
    generator=None,
    stop_ids=(),
    forbid_ids=(),
    window: int = MASK_WINDOW,
) -> tuple[list[list[int]], int]:
    """A masked LM as a generator ("BERTs are generative in-context learners", Samuel 2024): the text, then
    `window` <mask> tokens, read bidirectionally; one of them is revealed each call (sampling.sampler: first,
    the paper's, or the most sure by confidence, margin or entropy), and a <mask> is appended, so `window`
    stay ahead of the text until the last ones. A prediction is read where the objective reads a <mask>: at
    its own position, or the one before (shift 1, MNTP). Past the context the model reads the canvas's last
    max_seq_len tokens (a <mask> about to leave them is revealed first).

    sampling.cache prefix: bidirectional attention allows no exact cache (the text attends to the masks), so
    it is Fast-dLLM's approximate one: a full forward every cache_refresh calls (default: the window) keeps
    the keys and values, and the calls between forward only from the first <mask> of that refresh on.
    Returns (each row's new ids up to its stop token, calls)."""
    sampling = (sampling or Sampling()).resolved("first")
    limit, device = model.cfg.max_seq_len, _device(model)
    rng = RowRandom.of(generator if generator is not None else torch.Generator().manual_seed(0), rows, device)
    n = len(prompt_ids)
    total, width = n + max_new_tokens, max(1, min(window, limit - 2))
    x = torch.tensor([list(prompt_ids) + [mask_id] * width] * rows, device=device)
    forbid, stops = [*forbid_ids, mask_id], list(stop_ids)
    every = sampling.cache_refresh or width
    cache = None  # (the caches, the anchor they were taken at, their first recomputed position, calls since)
    calls, done = 0, torch.zeros(rows, dtype=torch.bool, device=device)
    while not done.all():
        # the <mask> tokens to reveal: those of the answer (more stay after it: the text visibly goes on), as
        # many in every row (each reveals one a call)
        masked = (x == mask_id) & (torch.arange(x.shape[1], device=device) < total)
        if not masked.any():
            break
        anchor = max(0, x.shape[1] - limit)  # the model reads x[:, anchor:]
        if sampling.cache == "none":
            logits, offset = model(x[:, anchor:], False, logits=True), anchor
        elif cache is None or cache[1] != anchor or cache[3] % every == 0:
            caches = [CanvasCache(rows) for _ in model.blocks]
            logits, offset = model(x[:, anchor:], False, kv_caches=caches, logits=True), anchor
            first = int(masked.float().argmax(1).min()) - shift - anchor
            cache = (caches, anchor, max(0, first), 1)
        else:
            caches, _, lo, since = cache
            for c in caches:
                c.refresh, c.start = False, lo
            logits = model(x[:, anchor + lo :], False, kv_caches=caches, start_pos=lo, logits=True)
            offset, cache = anchor + lo, (caches, anchor, lo, since + 1)
        calls += 1
        where = masked.nonzero()[:, 1].view(rows, -1)
        if sampling.sampler == "first":
            where = where[:, :1]
        read = (where - shift - offset).clamp(min=0)
        chosen = logits.float().gather(1, read[..., None].expand(-1, -1, logits.shape[-1]))
        chosen = _forbid(chosen, forbid)
        early = where < n + sampling.min_new_tokens  # no stop before min_new_tokens
        if stops and early.any():
            chosen[..., stops] = chosen[..., stops].masked_fill(early[..., None], float("-inf"))
        model_probs = torch.softmax(chosen.double(), -1)
        drawn = rng.draw(filter_probs(model_probs, **sampling.filters))
        pick = reveal_scores(sampling.sampler, model_probs, drawn).argmax(1)
        # a <mask> the next window would not hold (or not read, one position earlier) is revealed now
        leaving = where[:, 0] - shift < max(0, x.shape[1] + 1 - limit)
        pick = torch.where(leaving, torch.zeros_like(pick), pick)
        each = torch.arange(rows, device=device)
        x[each, where[each, pick]] = drawn[each, pick]
        done |= _ended(x[:, n:total], mask_id, stops)
        x = torch.cat([x, torch.full((rows, 1), mask_id, device=device)], 1)
    new = [cut_at_stop(row[n:total], stops) for row in x.tolist()]
    return [row[: row.index(mask_id)] if mask_id in row else row for row in new], calls


def _ended(new: torch.Tensor, mask_id: int, stops: list[int]) -> torch.Tensor:
    """Rows [N] whose text is final: a stop token with no <mask> before it."""
    if not stops:
        return torch.zeros(len(new), dtype=torch.bool, device=new.device)
    stop = torch.isin(new, torch.tensor(stops, device=new.device))
    before = (new == mask_id).long().cumsum(1) == 0
    return (stop & before).any(1)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def generate_causal(model, prompt_ids: list[int], max_new_tokens=50, **kw) -> list[int]:
    """One continuation of the prompt (see causal_rows): its new token ids."""
    return causal_rows(model, prompt_ids, 1, max_new_tokens, **kw)[0][0]


def _probabilities(logits: torch.Tensor, forbid: list[int], shift: int = 0, early=None) -> torch.Tensor:
    """The model's p(x0 | x_t) (float64, unfiltered: the samplers filter what they draw from, and rank by
    these); shift 1: position i is predicted at i-1. early (ids, n): these ids are also forbidden at the
    first n positions (stop tokens before min_new_tokens)."""
    logits = logits.float()
    if shift:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], 1)
    logits = _forbid(logits, forbid)
    if early is not None and early[1] > 0 and len(early[0]):
        logits[:, : early[1], early[0]] = float("-inf")
    return torch.softmax(logits.double(), -1)


def check_decoding(objective, sampling: Sampling, model=None, unmasking: bool = False) -> None:
    """Refuse, in one line, a view, sampler or fast-decoding knob (threshold, cache, guidance) this objective
    cannot use. unmasking: the canvas is unmasked (infilling) whatever way the objective generates."""
    name = objective.name
    caps = objective.capabilities
    if sampling.self_correct and caps.infill is Infill.NONE:
        raise UserError(
            f"--self-correct redraws the tokens a model disbelieves, reading each in place; a {name} model reads only "
            "the next token (use a diffusion, gidd, masked or mntp run)"
        )
    generation = caps.generation_for(sampling.view, name)
    if unmasking and generation is not Generation.DENOISE:
        generation = Generation.UNMASK
    if generation is Generation.DENOISE:
        if sampling.sampler not in ("", "ancestral") or sampling.eta or sampling.fast or sampling.block_length:
            raise UserError(
                f"a {name} model redraws every position each round from its reverse process (--sampler ancestral, "
                "--steps, --temperature, --top-k/p, --min-p); the unmasking samplers, --eta, --block-length, "
                "--threshold, --cache and --cfg-scale are masked diffusion's"
            )
        return
    if generation is Generation.MASKS:
        if sampling.sampler and sampling.sampler not in RANKED:
            raise UserError(
                f"a {name} model reveals its <mask> tokens after the text one a call: --sampler {' | '.join(RANKED)} "
                f"(not {sampling.sampler}; the others are diffusion's)"
            )
        if sampling.parallel or sampling.cfg_scale or sampling.cache == "dual":
            raise UserError(
                f"a {name} model reveals one <mask> a call: of the fast-decoding knobs only --cache prefix applies "
                "(an approximate cache, refreshed every --cache-refresh calls)"
            )
        return
    if generation is Generation.CAUSAL and sampling.fast:
        raise UserError(
            f"--threshold, --cache and --cfg-scale are diffusion decoding's; a {name} model decodes left to right, "
            "one token a call (use a diffusion or block_diffusion run)"
        )
    if generation is Generation.BLOCKS and sampling.cache != "none":
        raise UserError(
            f"--cache {sampling.cache} is for full-attention diffusion: a {name} model already keeps its finished "
            "blocks' keys and values exactly (leave --cache out)"
        )
    if generation is Generation.BLOCKS and sampling.cfg_scale:
        raise UserError(f"--cfg-scale guides full-attention diffusion (LLaDA's rule); a {name} model does not take it")
    if sampling.cache != "none" and not sampling.block_length:
        raise UserError(
            f"--cache {sampling.cache} is refreshed at each block: add --block-length N (N = the answer's length "
            "caches the prompt alone)"
        )
    if sampling.cache != "none" and model is not None and model.cfg.cond_dim:
        raise UserError(
            "--cache needs a model without --time-conditioning (its noise level is read from the whole canvas)"
        )


class CanvasDecoder:
    """p(x0 | x_t) of full-attention diffusion for denoise: the whole canvas each round, or (with a
    cache) a window of it against the keys and values of the last refresh: prefix (the window runs from
    the block to the canvas's end) or dual (the block alone). Each row is refreshed at its first round
    of a block and every `cache_refresh` rounds after. With guidance (cfg_scale w) every call also
    reads the canvas with the prompt masked (<s> kept): logits = u + (w + 1)(c - u), LLaDA's rule."""

    def __init__(self, model, x, mask_id, sampling: Sampling, forbid, shift: int, prompt: torch.Tensor, stops=((), 0)):
        self.model, self.x, self.mask_id, self.sampling = model, x, mask_id, sampling
        self.forbid, self.shift = forbid, shift
        self.stops = stops  # (stop ids, the first position of x where they may be drawn)
        self.prompt = prompt  # [N, T] bool: what guidance masks
        self.copies = 2 if sampling.cfg_scale else 1  # network evaluations per row and call

    def _logits(self, rows, caches=None, window: tuple[int, int] | None = None) -> torch.Tensor:
        ids = self.x[rows]
        if self.copies == 2:
            ids = torch.cat([ids, ids.masked_fill(self.prompt[rows], self.mask_id)])
            rows = torch.cat([rows, rows + len(self.x)])
        if caches is None:
            logits = self.model(ids, False, logits=True)
        else:
            for cache in caches:
                cache.rows, cache.refresh = rows, window is None
                cache.start = 0 if window is None else window[0]
            if window is None:
                logits = self.model(ids, False, kv_caches=caches, logits=True)
            else:
                lo, hi = window
                logits = self.model(ids[:, lo:hi], False, kv_caches=caches, start_pos=lo, logits=True)
        if self.copies == 2:
            cond, uncond = logits.float().chunk(2)
            logits = uncond + (self.sampling.cfg_scale + 1) * (cond - uncond)
        return logits

    def _probabilities(self, logits, lo: int, end: int, offset: int = 0) -> torch.Tensor:
        """p(x0 | x_t) at positions lo..end-1 from logits whose first column is position offset (a next-token
        reader's from the column before each)."""
        a = lo - offset - self.shift
        ids, allowed = self.stops
        if a < 0:  # position 0 reads itself (as _probabilities' shift does)
            probs = _probabilities(logits, self.forbid, self.shift, (ids, allowed - offset))
            return probs[:, lo - offset : end - offset]
        return _probabilities(logits[:, a : end - offset - self.shift], self.forbid, early=(ids, allowed - lo))

    def region(self, lo: int, end: int):
        """predict(rows) for denoise over x[:, lo:end]."""
        if self.sampling.cache == "none":
            return lambda rows: self._probabilities(self._logits(rows), lo, end)
        n = len(self.x)
        caches = [CanvasCache(n * self.copies) for _ in self.model.blocks]
        rounds = torch.zeros(n, dtype=torch.long, device=self.x.device)  # each row's rounds in this block
        every = self.sampling.cache_refresh
        # the window recomputed between refreshes; a next-token reader (shift) also needs the position before
        first = lo - self.shift
        last = self.x.shape[1] if self.sampling.cache == "prefix" else end

        def predict(rows):
            fresh = (rounds[rows] == 0) if every is None else (rounds[rows] % every == 0)
            out = None
            for part, window in ((rows[fresh], None), (rows[~fresh], (first, last))):
                if not len(part):
                    continue
                logits = self._logits(part, caches, window)
                probs = self._probabilities(logits, lo, end, 0 if window is None else first)
                if out is None:
                    out = probs.new_zeros((len(rows), *probs.shape[1:]))
                out[fresh if window is None else ~fresh] = probs
            rounds[rows] += 1
            return out

        return predict


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
    stop_ids=(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the <mask> tokens of the canvas x [N, T] with the objective's way of generating: the whole
    canvas at once (or in semi-autoregressive blocks of sampling.block_length, with Fast-dLLM's caches if
    asked) for a diffusion model, block by block with the finished blocks' keys and values cached for
    block diffusion; blocks stop after the one where every row has drawn one of stop_ids. Stop tokens may be
    drawn from sampling.min_new_tokens past the first <mask> on (the caller cuts the text at the first);
    anything else in forbid_ids never. generator: a RowRandom or a torch.Generator (its seed seeds the rows).
    Returns (the canvas, network calls per row)."""
    sampling = sampling.check().resolved("confidence")
    check_decoding(objective, sampling, model, unmasking=True)
    device = _device(model)
    x = x.clone().to(device)
    rng = RowRandom.of(generator, len(x), device)
    forbid = list(forbid_ids) + [mask_id]
    nfe = torch.zeros(len(x), dtype=torch.long, device=device)
    masked = (x == mask_id).any(0).nonzero().flatten()
    if len(masked) == 0:
        return x, nfe.cpu()
    first, T = int(masked[0]), x.shape[1]
    alpha, limit = objective.alpha, model.cfg.max_seq_len
    stops, allowed = [int(i) for i in stop_ids], first + sampling.min_new_tokens  # stop tokens from `allowed` on

    def ended(end: int) -> bool:
        """Whether every row has drawn a stop token before `end` (the blocks after it would be cut)."""
        return bool(stops) and bool(torch.isin(x[:, first:end], torch.tensor(stops, device=device)).any(1).all())

    if objective.capabilities.generation is not Generation.BLOCKS:
        if T > limit and not 0 < sampling.block_length < limit:
            raise UserError(
                f"a canvas of {T} tokens is longer than the model's context ({limit}): diffusion writes past it "
                f"only block by block (--block-length N, N < {limit})"
            )
        length = sampling.block_length or T - first
        regions = [(start, min(start + length, T) if sampling.block_length else T) for start in range(first, T, length)]
        steps = _rounds(x, mask_id, sampling.steps, regions)
        if sampling.cache != "none" and max(steps) <= 1 and sampling.sampler != "first-hitting":
            raise UserError(
                f"--cache {sampling.cache} with one round per block reuses nothing: raise --steps or --block-length"
            )
        prompt = x != mask_id
        prompt[:, 0] = False  # guidance masks the prompt, never <s>
        for (start, end), rounds in zip(regions, steps):
            # the model reads a window of the canvas: the whole of it while it fits, else the context's worth
            # that ends with this block (read from position 0, as a training window that starts inside a text)
            anchor = max(0, end - limit)
            window = slice(anchor, anchor + min(T, limit))
            decoder = CanvasDecoder(model, x[:, window], mask_id, sampling, forbid, shift, prompt[:, window],
                                    (stops, allowed - anchor))  # fmt: skip
            lo = 0 if not sampling.block_length else start - anchor  # one region: every <mask> of the canvas
            denoise(decoder.region(lo, end - anchor), x[:, window], lo, end - anchor, mask_id, sampling, alpha, rng,
                    rounds, nfe)  # fmt: skip
            if ended(end):  # every row has ended its text: the blocks after it would be cut
                return x[:, :end], (nfe * decoder.copies).cpu()
        return x, (nfe * decoder.copies).cpu()  # (every region's decoder evaluates as many copies)

    size = objective.block_size
    keep = (limit // 2) // size * size  # the clean context kept when the window slides, in whole blocks
    if T > limit and keep < size:
        raise UserError(f"a canvas of {T} tokens is longer than the model's context ({limit}) and its blocks of {size} "
                        "leave no room to slide the window")  # fmt: skip
    begin = first // size * size  # the block holding the first <mask>; earlier blocks are context
    regions = [(start, min(start + size, T)) for start in range(begin, T, size)]
    anchor, caches = 0, None  # the model reads x[:, anchor:end], anchor a block boundary
    for (start, end), rounds in zip(regions, _rounds(x, mask_id, sampling.steps, regions)):
        if end - anchor > limit:  # past the window: keep the last `keep` clean tokens, read from position 0
            anchor, caches = start - keep, None
        if use_cache and caches is None:
            caches = [KVCache() for _ in model.blocks]
            if start > anchor:
                model(x[:, anchor:start], objective.inference_attention(False, start - anchor), kv_caches=caches)
                nfe += 1

        def predict(rows, start=start, end=end, anchor=anchor, caches=caches):
            if not use_cache:
                spec = objective.inference_attention(False, end - anchor)
                logits = model(x[rows, anchor:end], spec, logits=True)
                return _probabilities(logits, forbid, early=(stops, allowed - anchor))[:, start - anchor : end - anchor]
            for cache in caches:
                cache.rows, cache.commit = (None if len(rows) == len(x) else rows), False
            try:
                logits = model(x[rows, start:end], False, kv_caches=caches, start_pos=start - anchor, logits=True)
            finally:
                for cache in caches:
                    cache.rows, cache.commit = None, True
            return _probabilities(logits, forbid, early=(stops, allowed - start))

        denoise(predict, x, start, end, mask_id, sampling, alpha, rng, rounds, nfe)
        if use_cache and end < T:  # the finished block's keys and values, for the blocks after it
            model(x[:, start:end], False, kv_caches=caches, start_pos=start - anchor)
            nfe += 1
        if ended(end):
            return x[:, :end], nfe.cpu()
    return x, nfe.cpu()


@torch.no_grad()
def denoise_rows(
    model,
    objective,
    x: torch.Tensor,
    free: torch.Tensor,
    sampling: Sampling,
    rng,
    forbid_ids=(),
    stop_ids=(),
    allowed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reverse process of a noise that is not only masking (Generation.DENOISE): the `free` positions of the
    canvas x [N, T] start from the objective's prior (<mask>, or uniform tokens) and every one of them is redrawn
    each of sampling.steps rounds (0: one per free position) from p(z_s | z_t) (`objective.posterior`), the model's
    p(x | z_t) filtered by temperature, top-k/p and min-p; the rest of x is given. Stop tokens may be drawn from
    position `allowed` on, the other forbid_ids never. Returns (the canvas, network calls per row)."""
    sampling = sampling.check()
    check_decoding(objective, sampling, model, unmasking=True)
    device = _device(model)
    x, free = x.clone().to(device), free.to(device)
    rng = RowRandom.of(rng, len(x), device)
    N, T = x.shape
    if T > model.cfg.max_seq_len:
        raise UserError(f"a canvas of {T} tokens is longer than the model's context ({model.cfg.max_seq_len}): the "
                        "reverse process redraws the whole of it each round (ask for fewer tokens)")  # fmt: skip
    x = torch.where(free, objective.prior((N, T), rng), x)
    forbid = list(forbid_ids)  # (<mask> among them: never a prediction)
    steps = sampling.steps or max(1, int(free.sum(1).max()))
    spec = objective.inference_attention(False, T)
    early = ([int(i) for i in stop_ids], allowed)
    nfe = torch.zeros(N, dtype=torch.long, device=device)
    for k in range(steps, 0, -1):
        logits = model(x, spec, logits=True)
        x_hat = filter_probs(_probabilities(logits, forbid, early=early), **sampling.filters)
        drawn = rng.draw(objective.posterior(x_hat, x, k / steps, (k - 1) / steps))
        x = torch.where(free, drawn, x)
        nfe += 1
    return x, nfe.cpu()


@torch.no_grad()
def self_correct_rows(
    model, objective, rows: list[list[int]], fixed, sampling: Sampling, rng, forbid_ids=(), patience=32
) -> tuple[list[list[int]], list[int]]:
    """GIDD's self-correction (`gidd/eval/self_correction.py`), sampling.self_correct rounds at most: each round
    the model reads the whole text, a token is drawn at every position from its p(x | text) at
    sampling.correct_temperature, and of the positions whose draw differs from their token the one with the most
    probable draw takes it (one a round). A row stops when nothing changes, or when the share of its tokens that
    are the model's argmax has not grown for `patience` rounds (GIDD's early stop). rows: each text's ids (<s>
    and prompt first); fixed: per row the number of first tokens never changed, or a bool tensor [N, longest row]
    of the positions that may change. Returns (the rows, network calls per row)."""
    if not sampling.self_correct or not rows:
        return rows, [0] * len(rows)
    device = _device(model)
    shift = objective.capabilities.infill.shift or 0
    width = max(len(r) for r in rows)
    x = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    lengths = torch.tensor([len(r) for r in rows], device=device)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r, device=device)
    where = torch.arange(width, device=device)[None]
    if isinstance(fixed, torch.Tensor):
        free = fixed.to(device) & (where >= 1)
    else:
        free = (where >= torch.tensor(fixed, device=device)[:, None]) & (where < lengths[:, None]) & (where >= 1)
    # padding trails each row as a document of its own
    spec = replace(objective.inference_attention(False, width), document_ids=(where >= lengths[:, None]).int())
    rng = RowRandom.of(rng, len(rows), device)
    best = torch.full((len(rows),), -1.0, dtype=torch.float64, device=device)
    waited = torch.zeros(len(rows), dtype=torch.long, device=device)
    active = free.any(1)
    nfe = torch.zeros(len(rows), dtype=torch.long, device=device)
    for _ in range(sampling.self_correct):
        if not active.any():
            break
        logits = model(x, spec, logits=True)
        probs = _probabilities(logits, list(forbid_ids), shift)
        drawn = rng.draw(filter_probs(probs, temperature=sampling.correct_temperature))
        score = torch.where(free & (drawn != x), probs.gather(-1, drawn[..., None]).squeeze(-1), 0.0)
        top = score.argmax(1)
        change = active & (score.max(1).values > 0)
        x[change, top[change]] = drawn[change, top[change]]
        nfe += active.long()
        agree = ((x == probs.argmax(-1)) & free).sum(1).double() / free.sum(1).clamp(min=1)
        improved = agree > best
        best = torch.where(improved, agree, best)
        waited = torch.where(improved, 0, waited + 1)
        active &= change & (waited <= patience)
    return [x[i, : len(r)].tolist() for i, r in enumerate(rows)], nfe.cpu().tolist()


def _rounds(x: torch.Tensor, mask_id: int, steps: int, regions: list[tuple[int, int]]) -> list[int]:
    """Rounds of each region: the steps split evenly over the regions with a <mask> to fill (at least one
    each), or with steps 0 the region's most <mask> tokens in a row (one round per token at most)."""
    masks = [int((x[:, a:b] == mask_id).sum(1).max()) for a, b in regions]
    if not steps:
        return [max(1, m) for m in masks]
    return [region_steps(steps, sum(m > 0 for m in masks))] * len(regions)


def _stop_and_forbid(tok):
    specials = [tok.token_to_id(t) for t in ("<pad>", BOS, EOS, MASK, "<unk>")]
    return [tok.token_to_id(EOS), tok.token_to_id(BOS)], specials


def sampling_of(sampler=None, steps=32, order=None, **knobs) -> Sampling:
    """A Sampling from keyword knobs; `order` is the older name (confidence, or random = ancestral); no sampler:
    the view's own."""
    if sampler is None:
        sampler = {"random": "ancestral", None: ""}.get(order, order)
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
    run,
    prompt: str,
    max_new_tokens: int,
    sampling: Sampling,
    num_samples: int = 1,
    seed: int = 0,
    use_cache=True,
    batch_size: int | None = None,
    first_index: int = 0,
) -> Samples:
    """num_samples continuations of `prompt` in batches of batch_size (default: one batch), in the way the
    objective (or sampling.view) generates, each ended by the end-of-text rule (`decode_rows`, sampling.stop).
    Sample i draws from its own random stream, seeded by (seed, first_index + i): it is the same text whatever
    num_samples and batch_size are."""
    check_decoding(run.objective, sampling, run.model)
    if sampling.cfg_scale and not prompt:
        raise UserError("--cfg-scale pushes samples away from the prompt masked: give a --prompt (there is none here)")
    tok = run.tokenizer
    prompt_ids = _prompt_ids(tok, prompt)
    batch_size = batch_size or num_samples
    token_ids, nfe, t0 = [], [], time.perf_counter()
    for start in range(0, num_samples, batch_size):
        rows = min(batch_size, num_samples - start)
        rng = RowRandom.seeded(seed, rows, first_index + start, _device(run.model))
        new, calls = decode_rows(run, prompt_ids, max_new_tokens, sampling, rows, rng, use_cache)
        token_ids += new
        nfe += calls
    seconds = time.perf_counter() - t0
    ended = [cut_at_strings(tok, prompt_ids, ids, sampling.stop) for ids in token_ids]
    return Samples([ids for ids, _ in ended], [text for _, text in ended], nfe, seconds)


def _prompt_ids(tok, prompt: str) -> list[int]:
    return [tok.token_to_id(BOS)] + (tok.encode(prompt, add_special_tokens=False).ids if prompt else [])


def decode_rows(
    run, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling, rows: int, rng, use_cache: bool = True
) -> tuple[list[list[int]], list[int]]:
    """`rows` continuations of prompt_ids (which start with <s>), in the way the objective or sampling.view
    generates: (each row's new ids, its network calls). One end-of-text rule for every way and sampler: a row
    ends at its first `</s>` (or `<s>`: a new document), which is dropped with everything after it and never
    drawn before sampling.min_new_tokens; the other special tokens are never drawn."""
    new, calls = _decode(run, prompt_ids, max_new_tokens, sampling, rows, rng, use_cache)
    if not sampling.self_correct:
        return new, calls
    # GIDD's self-correction of each text (its end token kept and never changed; nothing else special drawn)
    stop, specials = _stop_and_forbid(run.tokenizer)
    texts = [list(prompt_ids) + ids for ids in new]
    corrected, more = self_correct_rows(run.model, run.objective, texts, [len(prompt_ids)] * rows, sampling, rng,
                                        specials)  # fmt: skip
    return [ids[len(prompt_ids) :] for ids in corrected], [a + b for a, b in zip(calls, more)]


def _decode(run, prompt_ids, max_new_tokens, sampling, rows, rng, use_cache) -> tuple[list[list[int]], list[int]]:
    tok, model, objective = run.tokenizer, run.model, run.objective
    caps = objective.capabilities
    generation = caps.generation_for(sampling.view, objective.name)
    stop, specials = _stop_and_forbid(tok)
    forbid = [i for i in specials if i not in stop]
    if generation is Generation.DENOISE:  # the whole answer redrawn each round: it must fit the context
        n = min(max_new_tokens, model.cfg.max_seq_len - len(prompt_ids))
        canvas = torch.tensor([list(prompt_ids) + [tok.token_to_id(MASK)] * n] * rows)
        free = torch.zeros_like(canvas, dtype=torch.bool)
        free[:, len(prompt_ids) :] = True
        out, calls = denoise_rows(model, objective, canvas, free, sampling, rng, forbid, stop,
                                  len(prompt_ids) + sampling.min_new_tokens)  # fmt: skip
        return [cut_at_stop(row[len(prompt_ids) :], stop) for row in out.tolist()], calls.tolist()
    if generation is Generation.CAUSAL:
        new, calls = causal_rows(
            model, prompt_ids, rows, max_new_tokens, stop_ids=stop, forbid_ids=forbid, generator=rng,
            prompt_as_prefix=caps.prompt_as_prefix, use_cache=use_cache, min_new_tokens=sampling.min_new_tokens,
            **sampling.filters,
        )  # fmt: skip
        return new, [calls] * rows
    if generation is Generation.MASKS:
        new, calls = masked_rows(
            model, prompt_ids, tok.token_to_id(MASK), rows, max_new_tokens, caps.infill.shift or 0, sampling, rng,
            stop_ids=stop, forbid_ids=forbid,
        )  # fmt: skip
        return new, [calls] * rows
    if generation in (Generation.UNMASK, Generation.BLOCKS):
        mask = tok.token_to_id(MASK)
        # past the context by blocks (block diffusion, or diffusion's --block-length); a whole canvas stops there
        slides = generation is Generation.BLOCKS or sampling.block_length
        n = max_new_tokens if slides else min(max_new_tokens, model.cfg.max_seq_len - len(prompt_ids))
        canvas = torch.tensor([list(prompt_ids) + [mask] * n] * rows)
        out, calls = unmask_rows(
            model, objective, canvas, mask, sampling, rng, forbid, caps.infill.shift or 0, use_cache, stop_ids=stop
        )
        return [cut_at_stop(row[len(prompt_ids) :], stop) for row in out.tolist()], calls.tolist()
    check_generates(objective)
    raise AssertionError("unreachable")


def cut_at_strings(tok, prompt_ids: list[int], new: list[int], stops=()) -> tuple[list[int], str]:
    """(new ids, their text after the prompt) ended before the first of the `stops` strings (the harness's
    `until`): the text is cut there, and the ids to the tokens whose text lies wholly before it."""
    text = _continuation(tok, prompt_ids, new)
    cut = min((text.index(s) for s in stops if s and s in text), default=None)
    if cut is None:
        return new, text
    keep = 0
    while keep < len(new) and len(_continuation(tok, prompt_ids, new[: keep + 1])) <= cut:
        keep += 1
    return new[:keep], text[:cut]


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
    canvas = torch.tensor([ids])
    if objective.capabilities.generation is Generation.DENOISE:  # the gaps by the objective's reverse process
        out, _ = denoise_rows(model, objective, canvas, canvas == mask, sampling, g, specials)
    else:
        out, _ = unmask_rows(model, objective, canvas, mask, sampling, g, specials,
                             objective.capabilities.infill.shift)  # fmt: skip
    if sampling.self_correct:  # the gaps only: the given text is never changed
        out = torch.tensor(self_correct_rows(model, objective, out.tolist(), canvas == mask, sampling, g, specials)[0])
    return tok.decode(out[0, 1:].tolist()).strip()


AUTO_SPANS = (1, 8)  # --span auto: the gap lengths tried when none are given


@dataclass
class AutoSpan:
    """What `infill_auto` chose: the filled text, its gap's length, and every candidate's (length, score per
    token, filled text)."""

    text: str
    length: int
    candidates: list[tuple[int, float, str]]


def infill_auto(run, text: str, lengths=AUTO_SPANS, seed: int = 0, scorer: str | None = None, **fill) -> AutoSpan:
    """Fill the one <mask> of `text` with a gap of unknown length: each length of lengths (MIN, MAX) is filled
    (infill_text) and the filled text scored by the objective's own scorer (its likelihood, bound or
    pseudo-likelihood), per token of the whole text, so that a length is not preferred for adding (or
    sparing) tokens: a uniform model gives every length the same score, and ties go to a seeded draw, so
    it picks no length systematically."""
    from hybridlm.evaluate.lm import RunLM
    from hybridlm.evaluate.scoring import score_sentences

    low, high = lengths
    if not 1 <= low <= high <= MAX_STEPS:
        raise UserError(f"--span auto:MIN,MAX needs 1 <= MIN <= MAX (got {low},{high})")
    if text.count(MASK) != 1:
        raise UserError(f"--span auto chooses the length of one gap: give exactly one {MASK} (got {text.count(MASK)})")
    lm = RunLM(run)
    candidates = []
    for k in range(low, high + 1):
        filled = infill_text(run, text, span=k, seed=seed, **fill)
        tokens = max(1, len(lm.tokenize(filled)[0]))
        candidates.append((k, score_sentences(lm, [filled], scorer)[0] / tokens, filled))
    best = max(score for _, score, _ in candidates)
    tied = [c for c in candidates if c[1] >= best - 1e-9 * max(1.0, abs(best))]
    k, _, filled = tied[int(torch.randint(len(tied), (1,), generator=torch.Generator().manual_seed(seed)))]
    return AutoSpan(filled, k, candidates)


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

"""Likelihood of a text file for every objective, with bits per byte and per word.

- causal: exact perplexity over windows of the model's context (each token predicted once).
- masked: pseudo-perplexity exp(-PLL / N) (Salazar et al.), optionally within-word (pll-word).
- hybrid: both its causal perplexity and its MNTP pseudo-perplexity.
- diffusion: an upper bound: the NELBO, Monte Carlo over t (stratified, fixed seed; masks and
  weights from the diffusion objective) with its standard error over windows.
Which measures a model reports is its objective's answer (`capabilities.perplexity_scorers`); how
each is computed follows its scorer's record (exact, pseudo or bound).
Bits per byte (total nats / ln 2 / UTF-8 bytes) does not depend on the tokenizer, so it compares
runs with different tokenizers; it is only a likelihood for causal (exact) and diffusion (bound).
"""

from __future__ import annotations

import math

import numpy as np

from hybridlm.data import tokenize_files
from hybridlm.errors import UserError
from hybridlm.evaluate.scoring import no_scorer, score_copies
from hybridlm.results import stamp
from hybridlm.scorers import SCORERS
from hybridlm.tokenizer import check_text_files


def _windows(tokens: np.ndarray, length: int) -> list[list[int]]:
    """Windows overlapping by one token, so every token after the first is a target exactly once."""
    step = length - 1
    return [
        tokens[s : s + length].tolist()
        for s in range(0, max(1, len(tokens) - 1), step)
        if len(tokens[s : s + length]) > 1
    ]


def _summary(nll: float, n_tokens: int, n_bytes: int, n_words: int, kind: str) -> dict:
    return {
        "measure": kind,
        "tokens": n_tokens,
        "nll_per_token": nll / n_tokens,
        "perplexity": math.exp(nll / n_tokens),
        "bits_per_byte": nll / math.log(2) / n_bytes,
        "word_perplexity": math.exp(nll / max(1, n_words)),
    }


def _tokens(lm, path, max_tokens):
    """(tokens, word starts, UTF-8 bytes, words) of a text file, documents starting with <s>. Bytes
    and words are those of the text the kept tokens cover (all of it, or the first max_tokens)."""
    check_text_files([path], scan_utf8=False)
    split = tokenize_files([path], lambda lines: [lm.tokenize(line) for line in lines], lm.bos_id, np.int64, "tokenize")
    if split.n_tokens == 0:
        raise UserError(f"{path}: no text to evaluate")
    tokens, starts = np.concatenate(split.tokens), np.concatenate(split.per_token)
    n_bytes, n_words = split.n_bytes, split.n_words
    if max_tokens and len(tokens) > max_tokens:
        # measured on the text the kept tokens decode to (documents joined by newlines), not apportioned
        tokens, starts = tokens[:max_tokens], starts[:max_tokens]
        docs = np.split(tokens, np.flatnonzero(tokens == lm.bos_id))
        texts = [lm.decode(d[1:].tolist()) for d in docs if len(d) > 1]
        n_bytes = sum(len(t.strip().encode("utf-8")) for t in texts) + max(0, len(texts) - 1)
        n_words = sum(len(t.split()) for t in texts)
    return tokens, starts, max(1, n_bytes), n_words


def evaluate_file(lm, path, scorer=None, seq_len=None, max_tokens=0, samples=8, seed=0, progress=False) -> dict:
    tokens, starts, n_bytes, n_words = _tokens(lm, path, max_tokens)
    length = min(seq_len or lm.max_len, lm.max_len)
    if length < 2:
        raise UserError(f"--seq-len must be at least 2 (got {length})")
    windows, start_windows = _windows(tokens, length), _windows(starts, length)
    # a sum of scorers (fused) is no measure of the text; a prefix reading of windows is the causal one
    usable = [k for k in lm.scorers if not SCORERS[k].parts and not SCORERS[k].prefix]
    if not usable:
        raise no_scorer(lm.kind)
    kinds = list(lm.objective.capabilities.perplexity_scorers)
    if scorer:
        if scorer not in usable:
            raise UserError(
                f"scorer {scorer!r} is not available for perplexity of a {lm.kind} model "
                f"(choose from {', '.join(usable)})"
            )
        kinds = [scorer]
    out = {"model": lm.name, "file": str(path), "bytes": n_bytes, "words": n_words}
    counts = [len(w) - 1 for w in windows]  # position 0 is <s> or the previous window's last token
    for kind in kinds:
        s = SCORERS[kind]
        if s.window_copies is not None:
            copies = s.window_copies(s, lm, windows, samples, seed)
        else:  # the scorer's own copies of every token of each window, its draws seeded by the window
            copies = [
                c
                for wi, (w, st) in enumerate(zip(windows, start_windows))
                for c in s.copies(s, lm, wi, w, st, list(range(1, len(w))), 0, samples, seed * 1_000_003 + wi)
            ]
        scores = score_copies(
            lm, copies, len(windows), s.causal, s.forbid_mask, progress=progress, desc=kind, term=s.term
        )
        if s.measure == "bound":
            out[kind] = _bound_summary(-np.asarray(scores), counts, n_bytes, n_words, samples)
        else:
            out[kind] = _summary(-sum(scores), sum(counts), n_bytes, n_words, s.measure)
    return stamp("perplexity", out, lm.weights)


def _bound_summary(per_window, per_window_tokens, n_bytes, n_words, samples) -> dict:
    """A bound's summary with its standard error over windows."""
    total = float(per_window.sum())
    n_tokens = int(sum(per_window_tokens))
    out = _summary(total, n_tokens, n_bytes, n_words, "upper bound (NELBO)")
    per_tok = per_window / np.maximum(1, np.asarray(per_window_tokens))
    out["nll_per_token_stderr"] = (
        float(per_tok.std(ddof=1) / math.sqrt(len(per_tok))) if len(per_tok) > 1 else float("nan")
    )
    out["mc_samples_per_window"] = samples
    return out

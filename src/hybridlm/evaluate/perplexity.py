"""Likelihood of a text file for every objective, with bits per byte and per word.

- causal: exact perplexity over windows of the model's context (each token predicted once).
- masked: pseudo-perplexity exp(-PLL / N) (Salazar et al.), optionally within-word (pll-word).
- hybrid: both its causal perplexity and its MNTP pseudo-perplexity.
- diffusion: an upper bound: the NELBO, Monte Carlo over t (stratified, fixed seed) with its
  standard error over windows.
Bits per byte (total nats / ln 2 / UTF-8 bytes) does not depend on the tokenizer, so it compares
runs with different tokenizers; it is only a likelihood for causal (exact) and diffusion (bound).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hybridlm.data import _tokenize_files
from hybridlm.errors import UserError
from hybridlm.evaluate.scoring import Copy, score_copies
from hybridlm.tokenizer import check_text_files


def _windows(tokens: np.ndarray, length: int) -> list[list[int]]:
    """Windows overlapping by one token, so every token after the first is a target exactly once."""
    step = length - 1
    return [tokens[s : s + length].tolist() for s in range(0, max(1, len(tokens) - 1), step) if len(tokens[s : s + length]) > 1]


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
    check_text_files([path], scan_utf8=False)
    split = _tokenize_files([path], lambda lines: [lm.tokenize(line)[0] for line in lines], lm.bos_id, np.int64, "tokenize")
    if split.n_tokens == 0:
        raise UserError(f"{path}: no text to evaluate")
    tokens = np.concatenate(split.tokens)
    frac = 1.0
    if max_tokens and len(tokens) > max_tokens:
        frac = max_tokens / len(tokens)
        tokens = tokens[:max_tokens]
    return tokens, int(split.n_bytes * frac), int(split.n_words * frac)


def evaluate_file(lm, path, scorer=None, seq_len=None, max_tokens=0, samples=8, seed=0, progress=False) -> dict:
    tokens, n_bytes, n_words = _tokens(lm, path, max_tokens)
    length = min(seq_len or lm.max_len, lm.max_len)
    windows = _windows(tokens, length)
    kinds = {"causal": ["causal"], "masked": ["pll"], "hybrid": ["causal", "mntp"], "diffusion": ["elbo"]}[lm.kind]
    if scorer:
        if scorer not in lm.scorers or scorer == "fused":
            raise UserError(f"scorer {scorer!r} is not available for perplexity of a {lm.kind} model (choose from {', '.join(k for k in lm.scorers if k != 'fused')})")
        kinds = [scorer]
    out = {"model": lm.name, "file": str(path), "bytes": n_bytes, "words": n_words}
    for kind in kinds:
        if kind == "causal":
            copies = [Copy(i, w, list(range(len(w) - 1)), w[1:]) for i, w in enumerate(windows)]
            nll = -sum(score_copies(lm, copies, len(windows), True, progress=progress, desc=kind))
            out[kind] = _summary(nll, sum(len(w) - 1 for w in windows), n_bytes, n_words, "exact")
        elif kind in ("pll", "pll-word", "mntp", "mntp-word"):
            # every token is masked once: read in place (pll) or from the position before (mntp)
            shift = 1 if kind.startswith("mntp") else 0
            copies = []
            for wi, w in enumerate(windows):
                starts = lm.starts_word(w) if kind.endswith("-word") else None
                for i in range(1, len(w)):  # position 0: <s>, or the previous window's last token
                    masked = list(w)
                    masked[i] = lm.mask_id
                    j = i + 1
                    while starts is not None and j < len(w) and not starts[j]:  # the rest of the word, to the right
                        masked[j] = lm.mask_id
                        j += 1
                    copies.append(Copy(wi, masked, [i - shift], [w[i]]))
            nll = -sum(score_copies(lm, copies, len(windows), False, progress=progress, desc=kind))
            out[kind] = _summary(nll, len(copies), n_bytes, n_words, "pseudo")
        elif kind == "elbo":
            out[kind] = _diffusion_bound(lm, windows, n_bytes, n_words, samples, seed, progress)
    return out


def _diffusion_bound(lm, windows, n_bytes, n_words, samples, seed, progress):
    """NELBO (log-linear schedule: weight 1/t) by Monte Carlo over t; per-window estimates give the SE."""
    g = torch.Generator().manual_seed(seed)
    copies, per_window_tokens = [], []
    eps = 1e-3
    for wi, w in enumerate(windows):
        n = len(w) - 1  # position 0 is <s> or context carried from the previous window
        per_window_tokens.append(n)
        offset = torch.rand((), generator=g).item()
        for s in range(samples):
            t = eps + (1 - eps) * ((offset + s / samples) % 1)
            chosen = [i + 1 for i in range(n) if torch.rand((), generator=g).item() < t]
            if not chosen:
                continue
            masked = list(w)
            for j in chosen:
                masked[j] = lm.mask_id
            copies.append(Copy(wi, masked, chosen, [w[j] for j in chosen], 1.0 / (t * samples)))
    per_window = -np.asarray(score_copies(lm, copies, len(windows), False, True, progress=progress, desc="elbo"))
    total = float(per_window.sum())
    n_tokens = int(sum(per_window_tokens))
    out = _summary(total, n_tokens, n_bytes, n_words, "upper bound (NELBO)")
    per_tok = per_window / np.maximum(1, np.asarray(per_window_tokens))
    out["nll_per_token_stderr"] = float(per_tok.std(ddof=1) / math.sqrt(len(per_tok))) if len(per_tok) > 1 else float("nan")
    out["mc_samples_per_window"] = samples
    return out

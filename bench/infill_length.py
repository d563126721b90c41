"""Infilling a gap of unknown length (`hlm infill --span auto`) against the true length, on the demo grammar.

    python bench/infill_length.py RUN [--items 100] [--max-span 6] [--seed 0]

RUN: a run trained on the demo grammar (e.g. bench/generation.py --fast-grid's WORK/grammar/long/diffusion).
Items: held-out grammar sentences (write_corpus with another seed), each with one to three consecutive
words (never the final ".") replaced by one <mask>. Each item is filled twice, greedily: with the true
length (the gap's tokens as the tokenizer reads them inside the sentence) and with --span auto:1,MAX.
Reported: how often auto finds the true length, the share of items whose filled sentence is the
original (exact match of the gap, ignoring case) and the share the grammar accepts, for both; and how
often two other rules would have found it from the same candidates: the total score (which prefers short
gaps by construction) and the total relative to the context's own score per token. Results as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from hybridlm.evaluate.lm import RunLM
from hybridlm.evaluate.scoring import score_sentences
from hybridlm.generate import infill_auto, infill_text
from hybridlm.grammar import is_grammatical, sentences_of, write_corpus
from hybridlm.runs import load_run
from hybridlm.tokenizer import MASK


def items(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(prefix, gap, suffix) word strings of held-out grammar sentences."""
    with tempfile.TemporaryDirectory() as tmp:
        text = write_corpus(Path(tmp) / "held_out.txt", 20 * n, seed=seed).read_text()
    rng = random.Random(seed)
    out = []
    for sentence in sentences_of(text)[0]:
        words = sentence.split()
        if len(words) < 4:
            continue
        width = rng.randint(1, min(3, len(words) - 2))
        start = rng.randint(0, len(words) - 1 - width)  # the final "." stays
        out.append((" ".join(words[:start]), " ".join(words[start : start + width]), " ".join(words[start + width :])))
        if len(out) == n:
            break
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--max-span", type=int, default=6)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    run = load_run(a.run)
    tok, lm = run.tokenizer, RunLM(run)
    found = exact_true = exact_auto = gram_true = gram_auto = by_total = by_context = 0
    t0 = time.perf_counter()
    cases = items(a.items, a.seed)
    for prefix, gap, suffix in cases:
        original = " ".join(x for x in (prefix, gap, suffix) if x)
        true_length = len(tok.encode((" " if prefix else "") + gap, add_special_tokens=False).ids)
        template = " ".join(x for x in (prefix, MASK, suffix) if x)
        by_truth = infill_text(run, template, span=true_length, temperature=0.0)
        chosen = infill_auto(run, template, (1, a.max_span), temperature=0.0)
        found += chosen.length == true_length
        totals = {k: per_token * len(lm.tokenize(text)[0]) for k, per_token, text in chosen.candidates}
        context = " ".join(x for x in (prefix, suffix) if x)
        per_context_token = score_sentences(lm, [context])[0] / len(lm.tokenize(context)[0])
        by_total += max(totals, key=totals.get) == true_length
        relative = {k: v - len(lm.tokenize(t)[0]) * per_context_token for (k, v), (_, _, t) in
                    zip(totals.items(), chosen.candidates)}  # fmt: skip
        by_context += max(relative, key=relative.get) == true_length
        exact_true += by_truth.lower() == original.lower()  # (a sentence may be capitalised or not)
        exact_auto += chosen.text.lower() == original.lower()
        gram_true += is_grammatical(by_truth)
        gram_auto += is_grammatical(chosen.text)
    n = len(cases)
    print(json.dumps({"run": a.run, "items": n, "max_span": a.max_span, "true_length_found": found / n,
                      "exact_true_length": exact_true / n, "exact_auto": exact_auto / n,
                      "grammatical_true_length": gram_true / n, "grammatical_auto": gram_auto / n,
                      "true_length_found_by_total": by_total / n, "true_length_found_by_context": by_context / n,
                      "seconds": round(time.perf_counter() - t0, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()

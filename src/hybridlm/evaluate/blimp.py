"""Minimal pairs in BLiMP's JSONL format; accuracy per paradigm, field and term, macro-averaged.

A pair is correct only when the good sentence scores strictly higher: ties are reported, never
counted correct (a known artefact of pipelines that pick index 0 on ties).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from hybridlm.errors import UserError
from hybridlm.evaluate.scoring import check_scorer, score_sentences
from hybridlm.files import read_jsonl
from hybridlm.results import stamp

REQUIRED = ("sentence_good", "sentence_bad")


def load_pairs(sources, limit: int | None = None) -> list[dict]:
    files: list[Path] = []
    for s in map(Path, sources):
        if s.is_dir():
            found = sorted(s.glob("*.jsonl"))
            if not found:
                raise UserError(f"no .jsonl files in {s}")
            files += found
        elif s.is_file():
            files.append(s)
        else:
            raise UserError(f"minimal-pair data not found: {s}")
    pairs = []
    for f in files:
        per_uid: dict[str, int] = defaultdict(int)
        n_lines = 0
        for where, row in read_jsonl(f):
            n_lines += 1
            missing = [k for k in REQUIRED if not isinstance(row.get(k), str) or not row.get(k).strip()]
            if missing:
                raise UserError(
                    f"{where}: missing field {missing[0]!r} (each line needs sentence_good and sentence_bad)"
                )
            uid = row.get("UID") or f.stem
            if limit is not None and per_uid[uid] >= limit:
                continue
            per_uid[uid] += 1
            pairs.append(
                {
                    "good": row["sentence_good"],
                    "bad": row["sentence_bad"],
                    "UID": uid,
                    "field": row.get("field", "unknown"),
                    "term": row.get("linguistics_term", "unknown"),
                }
            )
        if n_lines == 0:
            raise UserError(f"{f}: empty file (no minimal pairs)")
    return pairs


def evaluate_pairs(lm, pairs: list[dict], scorer: str | None = None, progress: bool = False, **kw) -> dict:
    sentences = sorted({p["good"] for p in pairs} | {p["bad"] for p in pairs})
    index = {s: i for i, s in enumerate(sentences)}
    scorer = check_scorer(lm, scorer)
    scores = score_sentences(lm, sentences, scorer, progress=progress, **kw)
    good = [scores[index[p["good"]]] for p in pairs]
    bad = [scores[index[p["bad"]]] for p in pairs]
    return aggregate(pairs, good, bad, scorer, lm.name, lm.weights)


def aggregate(
    pairs: list[dict], good: list[float], bad: list[float], scorer: str, model: str, weights: str | None = None
) -> dict:
    """Accuracy tables from each pair's two scores (also used to merge results computed piecewise)."""
    by = {"paradigms": defaultdict(list), "fields": defaultdict(list), "terms": defaultdict(list)}
    per_pair = []
    ties = 0
    for p, g, b in zip(pairs, good, bad):
        correct = g > b
        ties += g == b
        per_pair.append({"UID": p["UID"], "good": g, "bad": b, "correct": bool(correct)})
        by["paradigms"][p["UID"]].append(correct)
        by["fields"][p["field"]].append(correct)
        by["terms"][p["term"]].append(correct)

    def table(groups):
        return {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(groups.items())}

    paradigms = table(by["paradigms"])
    n_par = len(paradigms)
    # binomial standard error of the macro average (paradigms independent): says whether a
    # difference from 50% or from another run is more than sampling noise
    var = sum(v["accuracy"] * (1 - v["accuracy"]) / v["n"] for v in paradigms.values()) / n_par**2
    return stamp(
        "blimp",
        {
            "macro_accuracy": sum(v["accuracy"] for v in paradigms.values()) / n_par,
            "macro_stderr": var**0.5,
            "micro_accuracy": sum(pp["correct"] for pp in per_pair) / len(per_pair),
            "paradigms": paradigms,
            "fields": table(by["fields"]),
            "terms": table(by["terms"]),
            "ties": int(ties),
            "n_pairs": len(pairs),
            "scorer": scorer,
            "model": model,
            "pairs": per_pair,
        },
        weights,
    )

"""Age of acquisition (Chang & Bergen 2022, "Word acquisition in neural language models") as the
official BabyLM 2025 pipeline computes it: its `AoA_word/` code for the surprisals and
`utils.AoAEvaluator` for the fits (`tests/evaluate/test_pipeline_conformance.py` runs both on the
same surprisals and compares).

- Data (`full_eval/aoa/`): `cdi_childes.json` maps each CDI word to contexts (text before the word);
  `cdi_human.csv` holds, per word, the proportion of children producing it at 16-30 months.
- Surprisal of a word at a checkpoint, per context: -log p(" word" | context) in nats, by the run's
  scorer (the text is `context.strip() + " " + word`, the word's tokens scored as a completion).
- The model's AoA of a word: a sigmoid a / (1 + exp(-b (x - c))) + d fitted to -surprisal over
  x = log10(words seen + 1) (every context at every checkpoint), read where it crosses the
  surprisal halfway between chance (log2 of a 300,000-word vocabulary, the pipeline's choice) and
  the word's lowest surprisal; kept when the crossing lies within the checkpoints' range.
- The children's AoA: the same sigmoid fitted to the proportions over age (bounded as the pipeline
  bounds it), read at 50%.
- The score: Pearson's r between the two over the words that have both (the pipeline prints 0.0
  when fewer than three do; hlm reports null).
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridlm.errors import UserError
from hybridlm.results import stamp

AGES = tuple(range(16, 31))  # months, the CDI columns
CHANCE_VOCAB = 300_000  # the pipeline's approximate vocabulary for the chance surprisal (log2)
MAXFEV = 1000


@dataclass
class AoAData:
    words: list[str]
    contexts: list[list[str]]
    child: dict[str, np.ndarray]  # word -> proportion producing it at each of AGES (nan where missing)
    child_file: Path
    rebuilt: bool  # cdi_human.csv rebuilt from Wordbank's proportions, not the official file

    def texts(self) -> list[tuple[str, int, None]]:
        """(text, completion start, draw seed) per (word, context), words in file order."""
        out = []
        for word, contexts in zip(self.words, self.contexts):
            for context in contexts:
                text = context.strip() + " " + word.strip()
                out.append((text, len(text) - len(word.strip()), None))
        return out


def read_aoa(folder) -> AoAData:
    folder = Path(folder)
    words_file, child_file = folder / "cdi_childes.json", folder / "cdi_human.csv"
    for f in (words_file, child_file):
        if not f.is_file():
            raise UserError(f"{folder}: no {f.name} (the AoA task needs cdi_childes.json and cdi_human.csv)")
    try:
        raw = json.loads(words_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{words_file}: not valid JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{words_file}: expected an object mapping each word to its contexts")
    words, contexts = [], []
    for word, entries in raw.items():
        if len(word) <= 1:  # as the pipeline's load_eval
            continue
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("context"), str) for e in entries
        ):
            raise UserError(f'{words_file}: word {word!r} needs a list of {{"context": ...}} entries')
        words.append(word)
        contexts.append([e["context"] for e in entries])
    if not words:
        raise UserError(f"{words_file}: no words")
    try:
        with open(child_file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except UnicodeDecodeError:
        raise UserError(f"{child_file}: not UTF-8; re-encode the file") from None
    ages = [a for a in AGES if str(a) in columns]
    if "word" not in columns or not ages:
        raise UserError(f"{child_file}: needs a 'word' column and age columns 16 ... 30")
    child = {}
    for row in rows:
        child.setdefault(row["word"], np.array([_float(row.get(str(a))) for a in AGES]))
    return AoAData(words, contexts, child, child_file, rebuilt="wordbank_num_item_id" in columns)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def words_in_name(name: str) -> float | None:
    """The words seen a checkpoint or branch name stands for (words_10M, chck_10M -> 1e7), read as
    the pipeline reads its branch names: the first number, times K, M or B."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*([KMB]?)", name, re.IGNORECASE)
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[m.group(2).upper()]


def _sigmoid(x, a, b, c, d):
    return a / (1 + np.exp(-b * (x - c))) + d


def _fit(x, y, p0, bounds=None):
    from scipy.optimize import curve_fit

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            kw = {"bounds": bounds} if bounds is not None else {}
            return curve_fit(_sigmoid, x, y, p0=p0, maxfev=MAXFEV, **kw)[0]
    except (RuntimeError, ValueError, TypeError, np.linalg.LinAlgError):
        return None  # no fit: the word has no AoA, as in the pipeline


def _crossing(params, target):
    """Where the fitted sigmoid reaches `target`, or None when it never does."""
    if params is None:
        return None
    a, b, c, d = params
    if b <= 0 or a <= 0 or target <= d or target >= a + d:
        return None
    return c - np.log(a / (target - d) - 1) / b


def child_aoa(proportions: np.ndarray, threshold: float = 0.5) -> float | None:
    keep = ~np.isnan(proportions)
    ages, values = np.asarray(AGES, dtype=float)[keep], proportions[keep]
    if len(values) < 3:
        return None
    params = _fit(ages, values, [1.0, 0.1, np.mean(ages), 0.0], ([0, 0, ages[0], -0.5], [2.0, 1.0, ages[-1], 0.5]))
    aoa = _crossing(params, threshold)
    return None if aoa is None or not ages[0] <= aoa <= ages[-1] else float(aoa)


def model_aoa(surprisals: list[float], words_seen: list[float], threshold: float = 0.5) -> float | None:
    """log10(words seen) where the word is acquired, from its surprisal at each (checkpoint, context)."""
    steps, values = np.asarray(words_seen, dtype=float), np.asarray(surprisals, dtype=float)
    if len(values) < 3:
        return None
    keep = ~np.isnan(values)
    if not keep.any():
        return None
    steps, values = steps[keep], values[keep]
    chance = np.log2(CHANCE_VOCAB)
    target = -(chance - threshold * (chance - values.min()))
    x, y = np.log10(steps + 1), -values
    aoa = _crossing(_fit(x, y, [y.max() - y.min(), 1.0, x.mean(), y.min()]), target)
    if aoa is None or not steps[0] <= 10**aoa - 1 <= steps[-1]:
        return None
    return float(aoa)


def curve_fitness(data: AoAData, checkpoints: list[tuple[str, list[float]]]) -> dict:
    """The AoA score from each checkpoint's (name, surprisals in `data.texts()` order)."""
    from scipy.stats import pearsonr

    n = sum(len(c) for c in data.contexts)
    per_word: dict[str, tuple[list, list]] = {w: ([], []) for w in data.words}
    for name, surprisals in checkpoints:
        if len(surprisals) != n:
            raise UserError(
                f"AoA: checkpoint {name} has {len(surprisals)} surprisals for {n} contexts; evaluate it again"
            )
        words = words_in_name(name)
        k = 0
        for word, contexts in zip(data.words, data.contexts):
            values = [math.nan if v is None else v for v in surprisals[k : k + len(contexts)]]
            per_word[word][0].extend([words] * len(contexts))
            per_word[word][1].extend(values)
            k += len(contexts)
    pairs = {}
    for word, (steps, values) in per_word.items():
        if word not in data.child:
            continue
        child = child_aoa(data.child[word])
        model = model_aoa(values, steps) if child is not None else None
        if model is not None:
            pairs[word] = {"model": model, "child": child}
    value = p_value = None
    if len(pairs) >= 3:
        r = pearsonr([p["model"] for p in pairs.values()], [p["child"] for p in pairs.values()])
        value, p_value = float(r[0]), float(r[1])
        value, p_value = (None, None) if not math.isfinite(value) else (value, p_value)
    note = f"children's AoA from {data.child_file}" + (
        ", rebuilt from Wordbank's published proportions (not the official "
        "cdi_human.csv): close to, not identical with, the official numbers"
        if data.rebuilt
        else ""
    )
    return stamp(
        "aoa",
        {
            "task": "aoa",
            "metric": "pearson r (model vs child AoA)",
            "value": value,
            "p_value": p_value,
            "n_words": len(pairs),
            "checkpoints": [name for name, _ in checkpoints],
            "words": pairs,
            "note": note,
        },
    )

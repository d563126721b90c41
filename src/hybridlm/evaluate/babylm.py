"""The BabyLM 2025 zero-shot suite for every objective: BLiMP, BLiMP supplement, EWoK, entity
tracking, WUG adjective nominalisation and reading times, from the official data folders.

Each task is read as the official pipeline (`babylm/evaluation-pipeline-2025`,
`sentence_zero_shot/read_files.py`, `reading/run.py`) reads it, and its headline number is computed
as the pipeline computes it:
- blimp, supplement: minimal pairs (whole sentences), accuracy macro-averaged over UIDs (files for
  the supplement);
- ewok: `Context1` followed by " Target1" / " Target2"; only the target is scored; macro over domains;
- entity_tracking: `input_prefix` + each of the options (the first is right); accuracy per
  `{file}_{numops}_ops`, averaged within each split (regular, ambiref, move_contents), then over splits;
- wug_adj, wug_past: the two sentences scored whole; Spearman's rho between softmax(scores)[0] and
  the human ratio;
- comps: `prefix_acceptable` / `prefix_unacceptable` followed by " " + `property_phrase`; only the
  property phrase is scored; accuracy per file (base, wugs, wugs_dist_before, wugs_dist_in_between),
  macro over files;
- reading_eye_tracking / reading_self_paced: surprisal of each word given the text before it, and
  the gain in R² it brings over the baseline predictors by ordinary least squares, relative to the
  variance the baseline leaves ((R²_model - R²_base) / (1 - R²_base) x 100): the mean over the four
  eye-tracking measures, and self-paced reading time with the previous word's length and surprisal
  (spill-over) in the baseline, all pairwise interactions included.
A completion is the tokens whose character span ends after where the completion starts (the
official rule), scored with everything before it visible, by the model's own scorer: causal
log-probability, PLL / within-word PLL or MNTP over the completion tokens, or the diffusion bound of
the completion given the prefix (only completion tokens are masked; the same draws for every option
of an item). hlm's convention: an explicit <s>, fp32, and a tie is never correct (ties are counted,
per subset). `convention="official"` gives the official pipeline's numbers on its backends (causal,
mlm = pll, mntp) for runs and local HF models (hybridlm.evaluate.official), so numbers can sit
beside the leaderboard's. Age of acquisition (`aoa`) needs a run's words_N checkpoints
(hybridlm.evaluate.aoa, through `evaluate_checkpoints`).
"""

from __future__ import annotations

import csv
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from hybridlm.errors import UserError
from hybridlm.evaluate import aoa, official
from hybridlm.evaluate.lm import RunLM
from hybridlm.evaluate.scoring import SCORERS, check_scorer, score_completions
from hybridlm.files import read_json, read_jsonl
from hybridlm.objectives import build_objective
from hybridlm.results import stamp
from hybridlm.runs import RunDir
from hybridlm.scorers import available_scorers
from hybridlm.tokenizer import load_tokenizer

# COMPS file -> subset, as the pipeline names them (any other file: wugs_dist_in_between)
COMPS_SUBSETS = {"comps_base": "base", "comps_wugs": "wugs", "comps_wugs_dist-before": "wugs_dist_before"}
ENTITY_SPLITS = ("regular", "ambiref", "move_contents")
EYE_TRACKING = ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")


@dataclass
class Item:
    """One ranking item: texts whose completion starts at starts[i]; texts[0] is the right one."""

    texts: list[str]
    starts: list[int]
    subset: str
    ratio: float | None = None  # wug: the human preference for texts[0]
    where: str = ""  # file:line, for messages


@dataclass
class TaskData:
    items: list[Item] = field(default_factory=list)
    rows: list[dict] | None = None  # reading: the CSV rows


@dataclass(frozen=True)
class Task:
    """A BabyLM zero-shot task, declared once: where its data is, how a row becomes an item, what it measures.
    `hlm eval babylm`, its --tasks help, the README, the submission and the report read these records.

    kind: "ranking" (items from .jsonl rows, ranked by score), "reading" (surprisals of the reading CSV's
    words) or "curve" (computed over a run's words_N checkpoints: aoa). read_item(where, row, file) -> Item;
    result(items, scores, official) -> the task's result (default: accuracy, macro over subsets)."""

    name: str
    folders: tuple[str, ...]  # the folder names it is found under (full_eval first, then fast_eval)
    description: str
    kind: str = "ranking"
    read_item: Callable[[str, dict, Path], Item] | None = None
    result: Callable[[list[Item], list[list[float]], bool], dict] | None = None
    metric: str = "accuracy"
    chance: float | None = 0.5  # accuracy by guessing (the report's dashed line)


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task` one of hlm eval babylm's (by name; its folders are searched under --data)."""
    TASKS[task.name] = task
    return task


# ---------------------------------------------------------------- finding and reading the data
def find_tasks(data_dir, tasks=None) -> dict[str, Path]:
    """task -> its folder under data_dir (searched up to two levels down)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"BabyLM data folder not found: {root} (e.g. ../shared/data/babylm-2025/fast_eval)")
    wanted = list(TASKS) if not tasks else list(tasks)
    for t in wanted:
        if t not in TASKS:
            raise UserError(f"unknown task {t!r} (choose from: {', '.join(TASKS)})")
    every = {name for t in TASKS.values() for name in t.folders}
    folders = {p.name: p for p in sorted(root.rglob("*")) if p.is_dir() and len(p.relative_to(root).parts) <= 2}
    if root.name in every:
        folders.setdefault(root.name, root)
    found = {}
    for t in wanted:
        for name in TASKS[t].folders:
            if name in folders:
                found[t] = folders[name]
                break
        else:
            if tasks:  # asked for by name: its absence is an error
                raise UserError(f"no folder for task {t!r} under {root} (looked for {', '.join(TASKS[t].folders)})")
    if not found:
        raise UserError(f"no BabyLM task folders under {root} (looked for {', '.join(sorted(every))})")
    return found


def _need(where: str, row: dict, *keys, kind=str):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in keys:
        value = row.get(k)
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kinds):
            name = "number" if set(kinds) == {int, float} else " or ".join(t.__name__ for t in kinds)
            raise UserError(f"{where}: missing field {k!r} (or not a {name}); is this the right task folder?")


def read_task(task: str, folder: Path) -> TaskData:
    """The items of a task folder, or a one-line error naming the file and line at fault."""
    record = TASKS[task]
    if record.kind == "reading":
        return TaskData(rows=_read_reading(folder))
    if record.kind == "curve":
        aoa.read_aoa(folder)  # checked here; used by evaluate_checkpoints
        return TaskData()
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise UserError(f"{folder}: no .jsonl files for task {task}")
    data = TaskData()
    for f in files:
        for where, row in read_jsonl(f):
            data.items.append(record.read_item(where, row, f))
    if not data.items:
        raise UserError(f"{folder}: task {task} has no items")
    return data


# ---------------------------------------------------------------- the tasks' rows
def _pair_item(where, row, f, by_uid: bool = False) -> Item:  # two whole sentences; BLiMP's subset is its UID
    _need(where, row, "sentence_good", "sentence_bad")
    subset = row.get("UID") if by_uid and isinstance(row.get("UID"), str) else f.stem
    return Item([row["sentence_good"], row["sentence_bad"]], [0, 0], subset, where=where)


def _ewok_item(where, row, f) -> Item:
    _need(where, row, "Context1", "Target1", "Target2", "Domain")
    c = row["Context1"]
    return Item([c + " " + row["Target1"], c + " " + row["Target2"]], [len(c), len(c)], row["Domain"], where=where)


def _entity_item(where, row, f) -> Item:
    _need(where, row, "input_prefix")
    _need(where, row, "options", kind=list)
    _need(where, row, "numops", kind=int)
    p, options = row["input_prefix"], row["options"]
    if len(options) < 2 or not all(isinstance(o, str) for o in options):
        raise UserError(f"{where}: 'options' must be two or more strings")
    return Item([p + o for o in options], [len(p)] * len(options), f"{f.stem}_{row['numops']}_ops", where=where)


def _wug_item(where, row, f, subset: str = "") -> Item:
    _need(where, row, "sentences")
    _need(where, row, "ratio", kind=(int, float))
    pair = row["sentences"].split("\t")
    if len(pair) != 2:
        raise UserError(f"{where}: 'sentences' must hold two sentences separated by a tab")
    return Item(pair, [0, 0], subset, ratio=float(row["ratio"]), where=where)


def _comps_item(where, row, f) -> Item:
    _need(where, row, "prefix_acceptable", "prefix_unacceptable", "property_phrase")
    good, bad, phrase = row["prefix_acceptable"], row["prefix_unacceptable"], row["property_phrase"]
    subset = COMPS_SUBSETS.get(f.stem, "wugs_dist_in_between")
    return Item([good + " " + phrase, bad + " " + phrase], [len(good) + 1, len(bad) + 1], subset, where=where)


def _read_reading(folder: Path) -> list[dict]:
    path = folder / "reading_data.csv"
    if not path.is_file():
        raise UserError(f"{folder}: no reading_data.csv")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8; re-encode the file") from None
    need = (
        "item",
        "word",
        "Subtlex_log10",
        "length",
        "context_length",
        "self_paced_reading_time",
        "prev_item",
        "prev_word",
        "prev_length",
        *EYE_TRACKING,
    )
    if not rows:
        raise UserError(f"{path}: no rows")
    missing = [k for k in need if k not in rows[0]]
    if missing:
        raise UserError(f"{path}: missing column {missing[0]!r}")
    return rows


# ---------------------------------------------------------------- metrics
def per_item(flat: list[float], items: list[Item]) -> list[list[float]]:
    """The scores of all items' texts, in order, split into each item's."""
    out, k = [], 0
    for it in items:
        out.append(flat[k : k + len(it.texts)])
        k += len(it.texts)
    return out


def _accuracy(scores: list[list[float]], items: list[Item], official: bool):
    """Accuracy, ties and items per subset (texts[0] strictly best; official: ties go to index 0, as
    the pipeline's torch.max picks)."""
    by, ties = defaultdict(list), defaultdict(int)
    for it, s in zip(items, scores):
        best_other = max(s[1:])
        ties[it.subset] += int(s[0] == best_other)
        by[it.subset].append(s[0] >= best_other if official else s[0] > best_other)
    subsets = sorted(by)
    accuracy = {k: sum(by[k]) / len(by[k]) for k in subsets}
    return accuracy, {k: ties[k] for k in subsets}, {k: len(by[k]) for k in subsets}


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        same = x == v
        ranks[same] = ranks[same].mean()
    return ranks


def spearman(a, b) -> float:
    ra, rb = _rank(np.asarray(a, dtype=np.float64)), _rank(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def ols_r2(y: np.ndarray, columns: list[np.ndarray]) -> float:
    """R² of y on an intercept and the given columns, by least squares."""
    X = np.column_stack([np.ones(len(y))] + columns)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    return float(1 - resid @ resid / ((y - y.mean()) @ (y - y.mean())))


def _with_interactions(cols: dict[str, np.ndarray]) -> list[np.ndarray]:
    names = list(cols)
    return [cols[n] for n in names] + [cols[a] * cols[b] for i, a in enumerate(names) for b in names[i + 1 :]]


def r2_gain(y, baseline: dict[str, np.ndarray], surprisal) -> float:
    """(R²_model - R²_base) / (1 - R²_base) x 100, the baseline with all pairwise interactions, the
    model adding surprisal; rows with a missing value in any of them dropped (statsmodels' dropna)."""
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in baseline.items()}
    y, surprisal = np.asarray(y, dtype=np.float64), np.asarray(surprisal, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(surprisal) & np.all([np.isfinite(v) for v in cols.values()], axis=0)
    if keep.sum() < len(cols) * 3:
        raise UserError("too few complete rows in the reading data to fit the regression")
    cols = {k: v[keep] for k, v in cols.items()}
    base = ols_r2(y[keep], _with_interactions(cols))
    model = ols_r2(y[keep], _with_interactions(cols) + [surprisal[keep]])
    return (model - base) / (1 - base) * 100


def _num(rows, key):
    out = []
    for r in rows:
        try:
            out.append(float(r[key]) if r[key] not in ("", None) else math.nan)
        except ValueError:
            out.append(math.nan)
    return np.asarray(out)


# ---------------------------------------------------------------- running
def evaluate_babylm(
    lm,
    data_dir,
    tasks=None,
    scorer=None,
    convention: str = "hlm",
    samples: int = 1,
    progress: bool = False,
    on_task=None,
) -> dict:
    """Every task found under data_dir (or those named), scored with the model's scorer. on_task(task, folder,
    data, scores), if given, sees each task's scores: per item (a list per item) or, for reading, the words'
    surprisals and the previous words'."""
    if convention not in ("hlm", "official"):
        raise UserError(f"unknown convention {convention!r} (choose hlm or official)")
    scorer = check_scorer(lm, scorer)
    backend = official.backend_for(scorer) if convention == "official" else None
    found = find_tasks(data_dir, tasks)
    curves = [t for t in found if TASKS[t].kind == "curve"]
    if curves and tasks:
        raise UserError(f"{curves[0]} is computed from a run's words_N checkpoints: use --run RUN --all-checkpoints")
    found = {t: f for t, f in found.items() if t not in curves}
    if not found:
        raise UserError(f"no task for one model under {data_dir} (aoa needs --all-checkpoints)")
    data = {t: read_task(t, folder) for t, folder in found.items()}  # every file is checked before any scoring
    out = stamp(
        "babylm",
        {"model": lm.name, "scorer": scorer, "convention": convention, "data": str(data_dir), "tasks": {}},
        lm.weights,
    )
    if backend:
        out["backend"] = backend
    reading_scores = None
    for task, d in data.items():
        t0 = time.time()
        record = TASKS[task]
        if record.kind == "reading":
            if reading_scores is None:
                if backend:
                    reading_scores = _reading_surprisals(
                        d.rows, lambda p: official.reading_scores(lm, p, backend, progress), official=True
                    )
                else:  # hlm's convention: " word" as the completion of its context
                    reading_scores = _reading_surprisals(
                        d.rows,
                        lambda p: score_completions(
                            lm, [(c + " " + w, len(c), 1) for c, w in p], scorer, samples=samples, progress=progress
                        ),
                    )
            result = record.result(d.rows, *reading_scores)
            scores = reading_scores
        else:
            texts = [
                (text, start, 7919 * i + 1) for i, it in enumerate(d.items) for text, start in zip(it.texts, it.starts)
            ]
            if backend:
                flat = official.completion_scores(lm, texts, backend, progress)
            else:
                flat = score_completions(lm, texts, scorer, samples=samples, progress=progress)
            scores = per_item(flat, d.items)
            result = (record.result or accuracy_result)(d.items, scores, backend is not None)
        if on_task is not None:
            on_task(task, found[task], d, scores)
        result["seconds"] = round(time.time() - t0, 2)
        if not math.isfinite(result["value"]):  # e.g. Spearman of constant preferences: null, not JSON's invalid NaN
            result["value"] = None
        out["tasks"][task] = result
    return out


def evaluate_checkpoints(
    run_dir,
    data_dir,
    tasks=None,
    scorer=None,
    samples: int = 1,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    log=print,
) -> list[dict]:
    """BabyLM 2025's learning curve: the suite on every words_N checkpoint of a run, in order of words
    seen. Resumable: each task's result is written (RUN/eval/checkpoints/words_N/babylm-SCORER.json)
    as soon as it is done, and a later call scores only what is missing. With an `aoa` folder, each
    checkpoint's word surprisals are kept there too, and the age-of-acquisition score computed from
    all of them lands in RUN/eval/aoa-SCORER.json."""
    run = RunDir(run_dir).require()
    found = run.words_checkpoints()
    if not found:
        raise UserError(
            f"run {run} has no words_N checkpoints; train it with --checkpoint-words or --checkpoint-schedule"
        )
    found_tasks = find_tasks(data_dir, tasks)
    names = list(found_tasks)
    aoa_data = aoa.read_aoa(found_tasks["aoa"]) if "aoa" in found_tasks else None
    key = {
        "data": str(Path(data_dir).resolve()),
        "samples": samples,
        "precision": precision,
    }  # what a kept result must match
    resolved = run_scorer(run, scorer)
    results = []
    for path, state in found:
        target = run.checkpoint_eval_path(path.name, f"babylm-{resolved}.json")
        run.check_eval_writable(target)
        done = read_json(target, "evaluation result") if target.is_file() else None
        if not (
            isinstance(done, dict)
            and all(done.get(k) == v for k, v in key.items())
            and isinstance(done.get("tasks"), dict)
        ):
            done = {
                "model": f"{run.path}@{path.name}",
                "scorer": resolved,
                "convention": "hlm",
                **key,
                "checkpoint": path.name,
                "step": state.get("step"),
                "words_seen": state.get("words_seen"),
                "tokens_seen": state.get("tokens_seen"),
                "tasks": {},
            }
        done = stamp("checkpoint", done)
        todo = [t for t in names if t not in done["tasks"]]
        if todo:
            lm = RunLM(run.path, device, precision, checkpoint=path.name)
            done["weights"] = lm.weights
            # the reading tasks share one pass of surprisals, so they are scored together
            reading = [t for t in todo if TASKS[t].kind == "reading"]
            for group in [[t] for t in todo if t not in reading] + ([reading] if reading else []):
                if group == ["aoa"]:
                    done["tasks"]["aoa"] = _aoa_surprisals(lm, aoa_data, resolved, samples, progress)
                else:
                    r = evaluate_babylm(lm, data_dir, group, resolved, "hlm", samples, progress)
                    done["tasks"].update({task: r["tasks"][task] for task in group})
                run.write_eval(
                    target, done
                )  # after each task: a killed evaluation loses at most one task (or the reading pair)
        log(
            f"{path.name} ({state.get('words_seen', 0):,.0f} words): "
            + ", ".join(f"{t} {_fmt(done['tasks'][t])}" for t in names if t in done["tasks"])
            + (" (kept)" if not todo else "")
        )
        results.append(done)
    if aoa_data is not None:
        fit = aoa.curve_fitness(aoa_data, [(r["checkpoint"], r["tasks"]["aoa"]["surprisals"]) for r in results])
        fit.update(model=str(run.path), scorer=resolved, **key)
        run.write_eval(f"aoa-{resolved}.json", fit)
        r = "n/a (fewer than 3 words with both AoAs)" if fit["value"] is None else f"{fit['value']:.3f}"
        log(f"age of acquisition: Pearson r {r} over {fit['n_words']} words ({fit['note']})")
    return results


def run_scorer(run: RunDir, scorer: str | None) -> str:
    """The scorer a run is scored with (the given one, checked, or its objective's first), known without loading
    its weights."""
    objective = build_objective(run.read_config(), load_tokenizer(run.tokenizer_path).get_vocab_size())
    allowed = available_scorers(objective.capabilities)
    resolved = scorer or allowed[0]
    if resolved not in allowed:
        raise UserError(
            f"scorer {resolved!r} is not one of this run's: {', '.join(allowed)}"
            + ("" if resolved in SCORERS else f" (scorers: {', '.join(SCORERS)})")
        )
    return resolved


def _aoa_surprisals(lm, data, scorer, samples, progress) -> dict:
    """One checkpoint's surprisal (nats) of each AoA word in each of its contexts."""
    t0 = time.time()
    scores = score_completions(lm, data.texts(), scorer, samples=samples, progress=progress)
    return {
        "metric": "mean surprisal (nats)",
        "value": -float(np.mean(scores)),
        "n": len(scores),
        "ties": 0,
        "subsets": {},
        "surprisals": [-s for s in scores],
        "seconds": round(time.time() - t0, 2),
    }


def _fmt(r: dict) -> str:
    return (
        "n/a"
        if r["value"] is None
        else f"{100 * r['value']:.1f}%"
        if r["metric"] == "accuracy"
        else f"{r['value']:.3f}"
    )


def accuracy_result(items: list[Item], scores: list[list[float]], official: bool) -> dict:
    """Accuracy, macro-averaged over the items' subsets."""
    subsets, subset_ties, subset_n = _accuracy(scores, items, official)
    return _accuracy_dict(items, sum(subsets.values()) / len(subsets), subsets, subset_ties, subset_n)


def _accuracy_dict(items, value, subsets, subset_ties, subset_n) -> dict:
    return {
        "metric": "accuracy",
        "value": value,
        "n": len(items),
        "ties": sum(subset_ties.values()),
        "subsets": subsets,
        "subset_ties": subset_ties,
        "subset_n": subset_n,
    }


def _entity_result(items: list[Item], scores: list[list[float]], official: bool) -> dict:
    """Accuracy per `{file}_{numops}_ops`, averaged within each split, then over the splits."""
    subsets, subset_ties, subset_n = _accuracy(scores, items, official)
    splits = {}
    for split in ENTITY_SPLITS:
        accs = [v for k, v in subsets.items() if k.startswith(split)]
        if accs:
            splits[split] = sum(accs) / len(accs)
    value = sum(splits.values()) / len(splits)
    return _accuracy_dict(items, value, {**subsets, **splits}, subset_ties, subset_n)


def wug_preferences(scores: list[list[float]]) -> list[float]:
    """softmax over the two sentences' scores, the first entry (the pipeline's)."""
    return [1 / (1 + math.exp(min(700.0, s[1] - s[0]))) for s in scores]


def _spearman_result(items: list[Item], scores: list[list[float]], official: bool) -> dict:
    return {
        "metric": "spearman",
        "value": spearman(wug_preferences(scores), [it.ratio for it in items]),
        "n": len(items),
        "ties": int(sum(s[0] == s[1] for s in scores)),
        "subsets": {},
    }


# what pandas' read_csv reads as a missing value by default: the pipeline's reading task scores no previous word
# where its context is one of these (a sentence that begins "None of ..." has "None" as its previous context)
PANDAS_NA = frozenset(
    "#N/A|#N/A N/A|#NA|-1.#IND|-1.#QNAN|-NaN|-nan|1.#IND|1.#QNAN|<NA>|N/A|NA|NULL|NaN|None|n/a|nan|null".split("|")
)


def _reading_surprisals(rows, log_probs, official: bool = False):
    """Surprisal (nats) of each word given its context, and of the previous word given its own;
    `log_probs` scores (context, word) pairs by a convention."""
    missing = PANDAS_NA if official else frozenset()
    prev = [i for i, r in enumerate(rows) if r.get("prev_item") and r["prev_item"] not in missing]
    pairs = [(r["item"] or "None", r["word"]) for r in rows]
    pairs += [(rows[i]["prev_item"], rows[i]["prev_word"]) for i in prev]
    scores = log_probs(pairs)
    surprisal = -np.asarray(scores[: len(rows)])
    prev_surprisal = np.full(len(rows), np.nan)
    prev_surprisal[prev] = -np.asarray(scores[len(rows) :])
    return surprisal, prev_surprisal


def _reading_result(rows, surprisal, prev_surprisal, eye_tracking: bool = False) -> dict:
    base = {k: _num(rows, k) for k in ("Subtlex_log10", "length", "context_length")}
    if eye_tracking:
        gains = {dv: r2_gain(_num(rows, dv), base, surprisal) for dv in EYE_TRACKING}
        value = sum(gains.values()) / len(gains)
    else:
        spill = {**base, "prev_length": _num(rows, "prev_length"), "prev_pred": prev_surprisal}
        gains = {"self_paced_reading_time": r2_gain(_num(rows, "self_paced_reading_time"), spill, surprisal)}
        value = gains["self_paced_reading_time"]
    return {"metric": "relative R² gain (%)", "value": value, "n": len(rows), "ties": 0, "subsets": gains}


def format_table(result: dict) -> str:
    lines = [f"{'task':<22} {'metric':<22} {'value':>8} {'n':>7} {'ties':>5}", "-" * 68]
    for task, r in result["tasks"].items():
        value = _fmt(r)
        lines.append(f"{task:<22} {r['metric']:<22} {value:>8} {r['n']:>7} {r['ties']:>5}")
    rule = (
        "ties counted correct, as the pipeline does"
        if result["convention"] == "official"
        else "ties are never counted correct"
    )
    backend = f" (the pipeline's {result['backend']} backend)" if result.get("backend") else ""
    lines.append(f"scorer {result['scorer']}{backend}, convention {result['convention']} ({rule})")
    return "\n".join(lines)


# ---------------------------------------------------------------- the tasks
for _task in (
    Task("blimp", ("blimp_filtered", "blimp_fast"), "BLiMP minimal pairs, macro over paradigms (UIDs)",
         read_item=partial(_pair_item, by_uid=True)),
    Task("supplement", ("supplement_filtered", "supplement_fast"), "BLiMP supplement, macro over files",
         read_item=_pair_item),
    Task("ewok", ("ewok_filtered", "ewok_fast"), "EWoK world knowledge: the target after its context, macro over "
         "domains", read_item=_ewok_item),
    Task("entity_tracking", ("entity_tracking", "entity_tracking_fast"), "entity tracking: the right one of five "
         "options, macro over splits", read_item=_entity_item, result=_entity_result, chance=0.2),
    Task("wug_adj", ("wug_adj_nominalization",), "WUG adjective nominalisation: Spearman's rho with people",
         read_item=partial(_wug_item, subset="wug_adj"), result=_spearman_result, metric="spearman", chance=None),
    Task("wug_past", ("wug_past_tense",), "WUG past tense: Spearman's rho with people",
         read_item=partial(_wug_item, subset="wug_past"), result=_spearman_result, metric="spearman", chance=None),
    Task("comps", ("comps",), "COMPS property knowledge: the property phrase after each prefix, macro over files",
         read_item=_comps_item),
    Task("reading_eye_tracking", ("reading",), "eye-tracking times: relative R² gain of surprisal", kind="reading",
         result=partial(_reading_result, eye_tracking=True), metric="relative R² gain (%)", chance=None),
    Task("reading_self_paced", ("reading",), "self-paced reading times: relative R² gain of surprisal",
         kind="reading", result=_reading_result, metric="relative R² gain (%)", chance=None),
    Task("aoa", ("aoa",), "age of acquisition: Pearson r with children's (with --all-checkpoints)", kind="curve",
         metric="pearson", chance=None),
):  # fmt: skip
    register_task(_task)

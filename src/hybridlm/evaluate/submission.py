"""The BabyLM 2025 submission: the official pipeline's results tree and the one collated file the
leaderboard takes, written from hlm's own evaluation (`babylm/evaluation-pipeline-2025`: its
`--save_predictions`, `reading/run.py`, `AoA_word/run.py`, `finetune/run.py` and `collate_preds.py`).

The tree, as the pipeline lays it out (`--output_dir results`):
    results/MODEL/REVISION/zero_shot/BACKEND/TASK/DATASET/predictions.json   (DATASET: the data folder's name)
    results/MODEL/REVISION/zero_shot/BACKEND/reading/predictions.json
    results/MODEL/main/zero_shot/BACKEND/AoA_word/surprisal.json            (every chck_* revision in one file)
    results/MODEL/main/finetune/TASK/predictions.json
MODEL is the model folder's name (the pipeline's `Path(model).stem`), REVISION `main` (the final
model, full data) or `chck_NM` (a words_NM checkpoint, fast data). A zero-shot file maps each subset
to its items in data order, `{"id": "SUBSET_i", "pred": the chosen text}` (WUG adds `prob`, the
softmax share of the first sentence); reading holds each word's surprisal and the previous word's.

BACKEND is the pipeline's name for the scorer (causal, mlm = pll, mntp) under `--convention
official`, which are the pipeline's numbers; an hlm scorer the pipeline has no backend for (the
diffusion bound `elbo`, `pll-word`, ...) fills a folder of its own name under hlm's convention, where
a tie is never counted correct (the chosen text is the best other option). `collate` checks the tree
as `collate_preds.py` does — every revision present, every task and subset at its official size —
and builds the same file, its fast scores computed from the fast data as that script computes them.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np

from hybridlm.errors import UserError
from hybridlm.evaluate import aoa, babylm, official
from hybridlm.files import atomic_write_text, inside_hlm_folder

# hlm task -> the pipeline's --task, which names its folder in the tree and its key in the collated file
PIPELINE_TASK = {
    "blimp": "blimp",
    "supplement": "blimp",
    "ewok": "ewok",
    "entity_tracking": "entity_tracking",
    "wug_adj": "wug_adj",
    "wug_past": "wug_past",
    "comps": "comps",
}
COLLATED_KEY = {"supplement": "blimp_supplement"}  # the collated file's key where it is not the task's name
# (hlm task, the pipeline's data folder) for the final model's full evaluation and each revision's fast one
FULL_TASKS = (
    ("blimp", "blimp_filtered"),
    ("supplement", "supplement_filtered"),
    ("ewok", "ewok_filtered"),
    ("entity_tracking", "entity_tracking"),
    ("wug_adj", "wug_adj_nominalization"),
    ("wug_past", "wug_past_tense"),
    ("comps", "comps"),
    ("reading", "reading"),
)
FAST_TASKS = (
    ("blimp", "blimp_fast"),
    ("supplement", "supplement_fast"),
    ("ewok", "ewok_fast"),
    ("entity_tracking", "entity_tracking_fast"),
    ("wug_adj", "wug_adj_nominalization"),
    ("wug_past", "wug_past_tense"),
    ("reading", "reading"),
)
GLUE = ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")
TRACKS = {  # the chck_* revisions each track's submission holds (collate_preds.py's lists)
    "strict-small": [f"chck_{i}M" for i in range(1, 10)] + [f"chck_{10 * i}M" for i in range(1, 11)],
    "strict": [f"chck_{i}M" for i in range(1, 10)]
    + [f"chck_{10 * i}M" for i in range(1, 10)]
    + [f"chck_{100 * i}M" for i in range(1, 11)],
}
OFFICIAL_BACKENDS = tuple(official.BACKENDS.values())
REVISION = re.compile(r"main|chck_[0-9.]+[KMB]?")


@cache
def official_sizes() -> dict:
    """The item counts the leaderboard checks (`babylm_2025_sizes.json`, from `collate_preds.py`)."""
    return json.loads((Path(__file__).parent / "babylm_2025_sizes.json").read_text(encoding="utf-8"))


def tree_backend(scorer: str, convention: str) -> str:
    """The backend folder a scorer's predictions fill."""
    if convention == "official":
        return official.backend_for(scorer)
    if scorer in official.BACKENDS:
        raise UserError(
            f"--predictions with the {scorer} scorer fills the pipeline's {official.BACKENDS[scorer]} backend, whose "
            "predictions are the official convention's: add --convention official"
        )
    return scorer


def revision_of(checkpoint: str) -> str:
    """words_2M -> chck_2M: a checkpoint's branch name in a submission."""
    return "chck_" + checkpoint.removeprefix("words_")


def model_name(path) -> str:
    """The model's folder in the tree: the pipeline's `Path(model_path_or_name).stem`."""
    return Path(path).resolve().stem


# ---------------------------------------------------------------- the tree
class Tree:
    """One model's predictions for one backend under a results folder."""

    def __init__(self, root, model: str, backend: str):
        self.root, self.model, self.backend = Path(root), model, backend

    @property
    def model_dir(self) -> Path:
        return self.root / self.model

    def zero_shot(self, revision: str) -> Path:
        return self.model_dir / revision / "zero_shot" / self.backend

    def task_file(self, revision: str, task: str, dataset: str) -> Path:
        if task.startswith("reading"):  # the pipeline's "reading", and hlm's two reading tasks: one file
            return self.zero_shot(revision) / "reading" / "predictions.json"
        return self.zero_shot(revision) / PIPELINE_TASK[task] / dataset / "predictions.json"

    def aoa_file(self) -> Path:
        return self.zero_shot("main") / "AoA_word" / "surprisal.json"

    def finetune_file(self, task: str) -> Path:
        return self.model_dir / "main" / "finetune" / task / "predictions.json"

    def write(self, path: Path, obj) -> None:
        """A file of the tree, atomically, through no link (each folder below the root is checked)."""
        folder = self.root
        folder.mkdir(parents=True, exist_ok=True)
        for part in path.parent.relative_to(self.root).parts:
            folder = folder / part
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise UserError(f"--predictions: {folder} is a link or a file; hlm does not write through it")
            folder.mkdir(exist_ok=True)
        atomic_write_text(path, json.dumps(obj))


def check_predictions_dir(root, inputs=()) -> None:
    """--predictions DIR: a new or empty folder, or a results tree (MODEL/REVISION/...), never a link, a run, prepared
    data, or a folder that holds or lies inside one of the command's inputs."""
    root = Path(root)
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise UserError(f"--predictions {root} is a link or a file; give a folder (the pipeline's results folder)")
    found = inside_hlm_folder(root)
    if found:
        raise UserError(f"--predictions {root} is inside the {found[1]} folder {found[0]}; write the tree elsewhere")
    here = root.resolve()
    for given in inputs:
        if given is None:
            continue
        there = Path(given).resolve()
        if here == there or here in there.parents or there in here.parents:
            raise UserError(f"--predictions {root} overlaps the input {given}; write the tree elsewhere")
    if root.is_dir():
        for model in root.iterdir():
            entries = list(model.iterdir()) if model.is_dir() and not model.is_symlink() else None
            if entries is None or any(
                not (e.is_dir() and not e.is_symlink() and REVISION.fullmatch(e.name))
                and not (e.is_file() and e.name.startswith("all_full_preds"))
                for e in entries
            ):
                raise UserError(
                    f"--predictions {root} holds {model.name!r}, which is not part of a BabyLM results tree "
                    "(MODEL/main, MODEL/chck_*); choose a new or empty folder"
                )


# ---------------------------------------------------------------- predictions from scores
def _choice(scores: list[float], official_rule: bool) -> int:
    """The option the model picks. Official: the first maximum (the pipeline's torch.max), so a tie picks the right
    one; hlm: a tie is never correct, so the best other option."""
    best = max(scores)
    if official_rule or scores[0] != best or best not in scores[1:]:
        return scores.index(best)
    return 1 + scores[1:].index(best)


def task_predictions(task: str, items: list, scores: list[list[float]], official_rule: bool) -> dict:
    """{subset: {"predictions": [{"id", "pred"(, "prob")}]}} as the pipeline's `--save_predictions` writes it: the
    chosen completion (COMPS: the whole sentence), WUG with the softmax share of its first sentence."""
    import torch

    out: dict[str, dict] = {}
    for it, s in zip(items, scores):
        preds = out.setdefault(it.subset, {"predictions": []})["predictions"]
        k = _choice(s, official_rule)
        text = it.texts[k] if task == "comps" else it.texts[k][it.starts[k] :]
        entry = {"id": f"{it.subset}_{len(preds)}", "pred": text}
        if babylm.TASKS[task].metric == "spearman":  # WUG: the pipeline's softmax of fp32 log-probabilities
            entry["prob"] = torch.softmax(torch.tensor(s, dtype=torch.float32), 0)[0].item()
        preds.append(entry)
    return out


def reading_predictions(surprisal, prev_surprisal) -> dict:
    """Each word's surprisal (nats) and the previous word's (NaN where there is none), as `reading/run.py`."""
    pairs = enumerate(zip(surprisal, prev_surprisal))
    rows = [{"id": i, "pred": float(p), "prev_pred": float(q)} for i, (p, q) in pairs]
    return {"reading": {"predictions": rows}}


def aoa_predictions(model: str, data: aoa.AoAData, revisions: list[tuple[str, list[float]]]) -> dict:
    """`AoA_word/surprisal.json`: every (revision, word, context) surprisal, with the words the branch stands for."""
    results = []
    for revision, surprisals in revisions:
        contexts = ((w, i, c) for w, cs in zip(data.words, data.contexts) for i, c in enumerate(cs))
        for (word, i, context), s in zip(contexts, surprisals):
            results.append(
                {
                    "step": revision,
                    "word_count": int(aoa.words_in_name(revision) or 0),
                    "target_word": word,
                    "context_id": i,
                    "context": context,
                    "surprisal": s,
                }
            )
    n = len(revisions)
    return {
        "metadata": {"model_name": model, "use_bos_only": False, "total_steps": n, "completed_steps": n},
        "results": results,
    }


def finetune_predictions(task: str, predictions: list[int]) -> dict:
    return {task: {"predictions": [{"id": f"{task}_{i}", "pred": int(p)} for i, p in enumerate(predictions)]}}


# ---------------------------------------------------------------- scoring into the tree
def predict_model(lm, data_dir, tasks, scorer, convention, samples, tree: Tree, revision="main", progress=False):
    """Score one model on the tasks under data_dir and write their predictions as `revision`; returns the
    evaluation result (hlm eval babylm's)."""
    official_rule = convention == "official"

    def write(task, folder, data, scores):
        reading = babylm.TASKS[task].kind == "reading"
        if task not in PIPELINE_TASK and not reading:  # a task of hlm's own: no place in the pipeline's tree
            return
        if reading:
            preds = reading_predictions(*scores)
        else:
            preds = task_predictions(task, data.items, scores, official_rule)
        tree.write(tree.task_file(revision, task, folder.name), preds)

    result = babylm.evaluate_babylm(lm, data_dir, tasks, scorer, convention, samples, progress, on_task=write)
    result["predictions"] = str(tree.zero_shot(revision))
    return result


def predict_checkpoints(
    run_dir, data_dir, tasks, scorer, convention, samples, root, device="cpu", precision="fp32", progress=False,
    log=print,
) -> Tree:  # fmt: skip
    """Every words_N checkpoint of a run as its chck_N revision (the fast evaluation of a submission), and with an
    `aoa` folder the surprisals of every checkpoint in main's AoA_word/surprisal.json."""
    from hybridlm.evaluate.lm import RunLM
    from hybridlm.evaluate.scoring import score_completions
    from hybridlm.runs import RunDir

    run = RunDir(run_dir).require()
    found = run.words_checkpoints()
    if not found:
        raise UserError(
            f"run {run} has no words_N checkpoints; train it with --checkpoint-words or --checkpoint-schedule"
        )
    found_tasks = babylm.find_tasks(data_dir, tasks)
    resolved = babylm.run_scorer(run, scorer)
    tree = Tree(root, model_name(run.path), tree_backend(resolved, convention))
    aoa_data = aoa.read_aoa(found_tasks["aoa"]) if "aoa" in found_tasks else None
    names = [t for t in found_tasks if t != "aoa"]
    for t in names:
        babylm.read_task(t, found_tasks[t])  # every file checked before any scoring
    surprisals = []
    for path, state in found:
        revision = revision_of(path.name)
        lm = RunLM(run.path, device, precision, checkpoint=path.name)
        said = []
        if names:
            r = predict_model(lm, data_dir, names, resolved, convention, samples, tree, revision, progress)
            said = [f"{t} {babylm._fmt(v)}" for t, v in r["tasks"].items()]
        if aoa_data is not None:
            texts = aoa_data.texts()
            if convention == "official":
                scores = official.completion_scores(lm, texts, tree.backend, progress)
            else:
                scores = score_completions(lm, texts, resolved, samples=samples, progress=progress)
            surprisals.append((revision, [-s for s in scores]))
            said.append(f"aoa {len(scores):,} surprisals")
        log(f"{revision} ({state.get('words_seen', 0):,.0f} words): " + ", ".join(said))
    if aoa_data is not None:
        tree.write(tree.aoa_file(), aoa_predictions(tree.model, aoa_data, surprisals))
    return tree


# ---------------------------------------------------------------- collating
def _expected(kind: str, task: str, sizes: dict) -> dict[str, int]:
    """subset (lower-cased, as collate_preds compares) -> its item count."""
    table = sizes[kind][task]
    if isinstance(table, dict):
        return {k.lower(): v for k, v in table.items()}
    full = sizes["full"].get(task)
    keys = full.keys() if isinstance(full, dict) else [task if task.startswith("wug") else "reading"]
    return {k.lower(): table for k in keys}


def _load(path: Path, shown: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{shown}: not valid JSON ({str(e).splitlines()[0][:80]}); write it again") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("predictions"), list) for v in data.values()
    ):
        raise UserError(f"{shown}: not a predictions file ({{subset: {{'predictions': [...]}}}}); write it again")
    return data


def _check_sizes(data: dict, want: dict[str, int], shown: Path) -> None:
    have = {k.lower(): len(v["predictions"]) for k, v in data.items()}
    for subset, n in have.items():
        if subset not in want:
            raise UserError(f"{shown}: subset {subset!r} is not one of the official data's; score the official data")
        if n != want[subset]:
            raise UserError(
                f"{shown}: subset {subset!r} has {n:,} predictions, the official data {want[subset]:,}; score the "
                "whole official data (no subsample)"
            )
    missing = [s for s in want if s not in have]
    if missing:
        raise UserError(f"{shown}: no predictions for subset {missing[0]!r} (and {len(missing) - 1} more subsets)")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"--data: no {path}, which the fast scores are computed from (the fast_eval folder)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _target_accuracy(results: dict, folder: Path, key: str) -> dict[str, float]:
    """collate_preds' `_calculate_target_results`: per subset, the share of predictions equal (stripped) to the
    right text of the data file SUBSET.jsonl, item by item."""
    out = {}
    for subset, preds in results.items():
        rows = _read_jsonl(folder / f"{subset}.jsonl")
        pairs = list(zip(preds["predictions"], rows))
        out[subset] = sum(_same(p["pred"], r[key]) for p, r in pairs) / len(pairs)
    return out


def _same(pred, target) -> bool:
    strip = lambda x: x.strip() if isinstance(x, str) else x  # noqa: E731
    return strip(pred) == strip(target)


def _entity_accuracy(results: dict, folder: Path) -> dict[str, float]:
    targets = defaultdict(list)
    for row in _read_jsonl(folder / "regular.jsonl"):
        targets[f"regular_{row['numops']}_ops"].append(row["options"][0])
    out = {}
    for subset, preds in results.items():
        pairs = list(zip(preds["predictions"], targets[subset]))
        out[subset] = sum(_same(p["pred"], t) for p, t in pairs) / len(pairs)
    return out


def _wug_correlation(results: dict, path: Path) -> dict[str, float]:
    from scipy.stats import spearmanr

    rows = _read_jsonl(path)
    out = {}
    for subset, preds in results.items():
        pairs = list(zip(preds["predictions"], rows))
        out[subset] = float(spearmanr([p["prob"] for p, _ in pairs], [r["ratio"] for _, r in pairs])[0])
    return out


def _reading_gain(results: dict, path: Path) -> dict[str, float]:
    """collate_preds' reading scores: the relative R² gain of surprisal over the baseline predictors (all pairwise
    interactions), eye-tracking averaged over its four measures (`rt`), self-paced with spill-over (`spr`)."""
    if not path.is_file():
        raise UserError(f"--data: no {path}, which the fast scores are computed from (the fast_eval folder)")
    rows = babylm._read_reading(path.parent)
    preds = results["reading"]["predictions"]
    pred = np.array([p["pred"] for p in preds], dtype=np.float64)
    prev = np.array([p["prev_pred"] for p in preds], dtype=np.float64)
    base = {k: babylm._num(rows, k) for k in ("Subtlex_log10", "length", "context_length")}
    spill = {**base, "prev_length": babylm._num(rows, "prev_length"), "prev_pred": prev}

    def gain(y, cols):
        cols = {k: v for k, v in cols.items()}
        keep = np.isfinite(y) & np.all([np.isfinite(v) for v in cols.values()], axis=0)
        cols = {k: v[keep] for k, v in cols.items()}
        r2_base = babylm.ols_r2(y[keep], babylm._with_interactions(cols))
        r2_model = babylm.ols_r2(y[keep], babylm._with_interactions(cols) + [pred[keep]])
        return (r2_model - r2_base) / (1 - r2_base)

    rt = [gain(babylm._num(rows, dv), base) for dv in babylm.EYE_TRACKING]
    return {"spr": gain(babylm._num(rows, "self_paced_reading_time"), spill), "rt": sum(rt) / len(rt)}


def _fast_scores(loaded: dict, data: Path) -> dict:
    """One revision's fast scores, as collate_preds' `get_revision_fast_eval_metrics`."""
    wug = data / "wug_adj_nominalization" / "wug_adj_nominalization.jsonl"
    return {
        "blimp": _target_accuracy(loaded["blimp"], data / "blimp_fast", "sentence_good"),
        "blimp_supplement": _target_accuracy(loaded["supplement"], data / "supplement_fast", "sentence_good"),
        "ewok": _target_accuracy(loaded["ewok"], data / "ewok_fast", "Target1"),
        "entity_tracking": _entity_accuracy(loaded["entity_tracking"], data / "entity_tracking_fast"),
        "wug_adj": _wug_correlation(loaded["wug_adj"], wug),
        "wug_past": _wug_correlation(loaded["wug_past"], data / "wug_past_tense" / "wug_past_tense.jsonl"),
        "reading": _reading_gain(loaded["reading"], data / "reading" / "reading_data.csv"),
    }


def find_model_dir(predictions, model: str | None = None) -> Path:
    """The model's folder in a results tree: DIR/MODEL, or DIR itself when it holds main/."""
    root = Path(predictions)
    if not root.is_dir():
        raise UserError(f"--predictions {root} is not a folder; write it with hlm eval babylm --predictions")
    if model:
        if not (root / model / "main").is_dir():
            raise UserError(f"--predictions {root} has no model {model!r} (no {root / model / 'main'})")
        return root / model
    if (root / "main").is_dir():
        return root
    models = sorted(p.name for p in root.iterdir() if (p / "main").is_dir())
    if len(models) != 1:
        raise UserError(
            f"--predictions {root} holds "
            + (f"models {', '.join(models)}: name one with --model" if models else "no model (no MODEL/main folder)")
        )
    return root / models[0]


def collate(model_dir, backend: str, track: str, data, revisions=None, sizes=None) -> dict:
    """The submission file collate_preds.py writes (`--fast`), from the tree of one model and backend, after its
    checks; any gap is one UserError naming it. `revisions` and `sizes` default to the track's and the official
    data's."""
    model_dir, data = Path(model_dir), Path(data)
    if track not in TRACKS:
        raise UserError(f"unknown track {track!r} (choose from: {', '.join(TRACKS)})")
    revisions = TRACKS[track] if revisions is None else list(revisions)
    sizes = official_sizes() if sizes is None else sizes
    zero_shot = model_dir / "main" / "zero_shot"
    if not (zero_shot / backend).is_dir():
        have = sorted(p.name for p in zero_shot.iterdir() if p.is_dir()) if zero_shot.is_dir() else []
        raise UserError(
            f"{model_dir} has no predictions of the {backend} backend"
            + (f" (it holds {', '.join(have)}: collate with --backend {have[0]})" if have else "")
        )
    tree = Tree(model_dir.parent, model_dir.name, backend)
    wanted = [("main", t, d, "full") for t, d in FULL_TASKS] + [
        (r, t, d, "fast") for r in revisions for t, d in FAST_TASKS
    ]
    files = {(r, t): tree.task_file(r, t, d) for r, t, d, _ in wanted}
    files.update({("main", "aoa"): tree.aoa_file(), **{("main", g): tree.finetune_file(g) for g in GLUE}})
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        where = [str(p.relative_to(model_dir)) for p in missing]
        hint = (
            "hlm finetune --predictions"
            if "finetune" in where[0]
            else "hlm eval babylm --all-checkpoints --predictions"
            if where[0].startswith("chck_") or "AoA_word" in where[0]
            else "hlm eval babylm --predictions"
        )
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{model_dir} is incomplete: no {where[0]}{more}; write it with {hint}")
    loaded = {}
    for (revision, task), path in files.items():
        shown = path.relative_to(model_dir.parent)
        if task == "aoa":
            continue
        loaded[revision, task] = _load(path, shown)
        if task in GLUE:
            _check_sizes(loaded[revision, task], {task: sizes["finetune"][task]}, shown)
        else:
            kind = "full" if revision == "main" else "fast"
            _check_sizes(loaded[revision, task], _expected(kind, task, sizes), shown)
    aoa_data = _load_aoa(files["main", "aoa"], model_dir, revisions, sizes["aoa"])
    out = {COLLATED_KEY.get(t, t): loaded["main", t] for t, _ in FULL_TASKS}
    out["aoa"] = aoa_data
    out["glue"] = {}
    for g in GLUE:
        out["glue"] |= loaded["main", g]
    per_revision = [_fast_scores({t: loaded[r, t] for t, _ in FAST_TASKS}, data) for r in revisions]
    out["fast_eval_results"] = {k: [s[k] for s in per_revision] for k in per_revision[0]} if per_revision else {}
    if backend not in OFFICIAL_BACKENDS:
        out["hlm"] = {
            "backend": backend,
            "note": f"scored by hlm's {backend} scorer, for which the official pipeline has no backend",
        }
    return out


def _load_aoa(path: Path, model_dir: Path, revisions: list[str], size: int) -> dict:
    shown = path.relative_to(model_dir.parent)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        steps = defaultdict(int)
        for r in data["results"]:
            steps[r["step"]] += 1
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{shown}: not an AoA surprisal file ({type(e).__name__}); write it again") from None
    absent = [r for r in revisions if r not in steps]
    if absent or len(steps) != len(revisions):
        extra = sorted(set(steps) - set(revisions))
        raise UserError(
            f"{shown}: "
            + (f"no surprisals for revision {absent[0]}" if absent else f"revisions the track does not have: {extra}")
            + f" ({len(steps)} revisions, the track has {len(revisions)})"
        )
    for r in revisions:
        if steps[r] != size:
            raise UserError(f"{shown}: revision {r} has {steps[r]:,} surprisals, the official AoA data {size:,}")
    return data


def summary(collated: dict, track: str, backend: str) -> str:
    zero = [k for k in collated if k not in ("aoa", "glue", "fast_eval_results", "hlm")]
    items = sum(len(v["predictions"]) for k in zero for v in collated[k].values())
    revisions = len({r["step"] for r in collated["aoa"]["results"]})
    fast = collated["fast_eval_results"]
    last = ""
    if fast and fast["blimp"]:
        blimp = fast["blimp"][-1]
        last = f"; the last revision's fast BLiMP {100 * sum(blimp.values()) / len(blimp):.2f}"
    return (
        f"{track} submission ({backend} backend): {len(zero)} zero-shot tasks ({items:,} predictions), AoA over "
        f"{revisions} revisions, {len(collated['glue'])} GLUE tasks, fast scores of {len(fast.get('blimp', []))} "
        f"revisions{last}"
    )

"""BabyLM 2026's multilingual zero-shot table: the track's groups `zeroshot_eng`, `zeroshot_nld`, `zeroshot_zho`
(lm-evaluation-harness task files, `multilingual/tasks/` of babylm-org/babylm-eval) run offline through hlm's
harness backend with the run's scorer, and tabulated per language.

DATA holds `tasks/` (that task folder, as it is) and `task-data/` (local copies of the tasks' hub datasets,
OWNER/NAME; see harness.localise_tasks). A language's score is the unweighted mean, x 100, of its group's tasks
(a task that is itself a group counts once, at its own accuracy over its documents).

Conventions: `official` is the harness's `acc` (the pipeline's number: an argmax tie picks the first choice, the
right one in a minimal pair, so such a tie counts correct); `hlm` counts a tie wrong, as hlm's BabyLM 2025 tasks
do. Both are computed from the same per-document log-likelihoods.
"""

from __future__ import annotations

from pathlib import Path

from hybridlm.errors import UserError
from hybridlm.evaluate.harness import run_harness
from hybridlm.results import stamp

TRACK_LANGUAGES = ("eng", "nld", "zho")


def _leaves(name: str, groups: dict) -> list[str]:
    """The tasks (not groups) under `name`, itself when it is a task."""
    if name not in groups:
        return [name]
    return [leaf for child in groups[name] for leaf in _leaves(child, groups)]


def _correct(sample: dict, ties_correct: bool) -> bool:
    """official (ties_correct): the harness's acc, the first of the highest scores is the gold one (a tie is right
    when the gold choice comes first, as in every minimal pair); hlm: the gold score alone is the highest."""
    scores = [r[0] for r in sample["resps"]]
    best = max(scores)
    if ties_correct:
        return scores.index(best) == sample["target"]
    return scores[sample["target"]] == best and scores.count(best) == 1


def evaluate_multilingual(data, languages=None, convention: str = "hlm", limit=None, **model) -> dict:
    """The track's table for `languages` (default: all three); `model`: run_harness's model and backend args."""
    root = Path(data)
    tasks, task_data = root / "tasks", root / "task-data"
    if not tasks.is_dir() or not task_data.is_dir():
        raise UserError(
            f"--data {data} must hold tasks/ (babylm-eval's multilingual/tasks) and task-data/ (the datasets, "
            "OWNER/NAME); see docs/babylm-2026.md"
        )
    languages = list(languages or TRACK_LANGUAGES)
    unknown = [lang for lang in languages if lang not in TRACK_LANGUAGES]
    if unknown:
        raise UserError(f"the multilingual track has languages {', '.join(TRACK_LANGUAGES)} (got {', '.join(unknown)})")
    groups = [f"zeroshot_{lang}" for lang in languages]
    out = run_harness(tasks=",".join(groups), include_path=tasks, task_data=task_data, limit=limit, log_samples=True,
                      **model)  # fmt: skip
    tree, samples = out["groups"], out.pop("samples")
    table: dict = {}
    for lang, group in zip(languages, groups):
        rows = {}
        for task in tree.get(group, []):
            docs = [s for leaf in _leaves(task, tree) for s in samples.get(leaf, [])]
            if not docs:
                continue
            right = sum(_correct(s, ties_correct=convention == "official") for s in docs)
            rows[task] = {"acc": 100 * right / len(docs), "n": len(docs),
                          "ties": sum(_correct(s, True) and not _correct(s, False) for s in docs)}  # fmt: skip
        table[lang] = {"tasks": rows, "score": sum(r["acc"] for r in rows.values()) / len(rows) if rows else None}
    result = {k: v for k, v in out.items() if k not in ("kind", "schema", "results", "groups")}
    return stamp("multilingual", {**result, "convention": convention, "languages": table})


def format_multilingual(result: dict) -> str:
    lines = [f"BabyLM 2026 multilingual, zero-shot ({result['scorer']}, convention {result['convention']}):"]
    for lang, entry in result["languages"].items():
        score = "—" if entry["score"] is None else f"{entry['score']:.2f}"
        lines.append(f"  {lang}: {score}")
        for task, row in entry["tasks"].items():
            lines.append(f"    {task}: {row['acc']:.2f} ({row['n']} items, {row['ties']} ties)")
    return "\n".join(lines)

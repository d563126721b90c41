"""The table in docs/babylm-pipeline.md: the official BabyLM 2025 pipeline on hlm's exports against
`hlm eval babylm` on the runs, task x backend (official number, hlm's official convention, hlm's own
convention and its ties), on the fast_eval suite.

    python bench/pipeline_conformance.py --work /tmp/conformance            # trains tiny Gutenberg runs
    python bench/pipeline_conformance.py --work W --run causal=RUN ...      # your own runs

It runs the pipeline's own entry points from ../shared/reference/evaluation-pipeline-2025 (the same
runner as tests/evaluate/test_pipeline_conformance.py) and prints a Markdown table; hlm's own
convention is the official scores with no tie counted correct (entity tracking, averaged over splits,
and the correlations are left out of that column).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "evaluate")]

from test_pipeline_conformance import BABYLM, GUTENBERG, SENTENCE_TASKS, run_pipeline  # noqa: E402

from hybridlm.config import TrainConfig  # noqa: E402
from hybridlm.data import prepare  # noqa: E402
from hybridlm.evaluate.babylm import evaluate_babylm  # noqa: E402
from hybridlm.evaluate.lm import RunLM  # noqa: E402
from hybridlm.export import export_run  # noqa: E402
from hybridlm.tokenizer import train_tokenizer  # noqa: E402
from hybridlm.train import train  # noqa: E402

# (objective, view of its export, hlm scorer, the pipeline's backend); the mntp run's export is read as
# the hybrid's masked view is (the tests run both)
COMBOS = [
    ("causal", "", "causal", "causal"),
    ("masked", "", "pll", "mlm"),
    ("hybrid", "masked_lm", "mntp", "mntp"),
    ("hybrid", "", "causal", "causal"),
]


def printed(official: dict, task: str) -> tuple[float, int]:
    """(the number the pipeline prints for `task`, the factor from hlm's value to it: percent, except the
    correlations of wug and reading)."""
    want = official[task]["average"] if isinstance(official[task], dict) else official[task]
    return want, 1 if task.startswith(("wug", "reading")) else 100


def layout(work: Path, ewok_every: int, entity_every: int) -> Path:
    """fast_eval under the folder names the runner expects, with a slice of the full EWoK (its fast set is
    encrypted) and, to fit a CPU, every ENTITY_EVERY-th entity-tracking item."""
    data = work / "data"
    if data.exists():
        return data
    data.mkdir(parents=True)
    fast = BABYLM / "fast_eval"
    for name, src in (
        ("blimp_fast", "blimp_fast"),
        ("supplement_fast", "supplement_fast"),
        ("wug_adj_nominalization", "wug_adj_nominalization"),
        ("reading", "reading"),
    ):
        (data / name).symlink_to(fast / src)
    for folder, src, every in (
        ("ewok_filtered", BABYLM / "full_eval" / "ewok_filtered", ewok_every),
        ("entity_tracking", fast / "entity_tracking_fast", entity_every),
    ):
        (data / folder).mkdir()
        for f in sorted(src.glob("*.jsonl")):
            lines = f.read_text(encoding="utf-8").splitlines()[::every]
            (data / folder / f.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def train_runs(work: Path, steps: int) -> dict[str, Path]:
    text = work / "train.txt"
    if not text.exists():
        with open(GUTENBERG / "train.txt", encoding="utf-8") as f:
            text.write_text(f.read(3_000_000), encoding="utf-8")
        train_tokenizer([text], vocab_size=2048, out_dir=work / "tok")
        prepare([text], work / "tok", work / "prepared", val_fraction=0.02)
    runs = {}
    for objective in sorted({c[0] for c in COMBOS}):
        out = work / "runs" / objective
        if not (out / "checkpoints").is_dir():
            train(
                TrainConfig(
                    data=str(work / "prepared"),
                    out=str(out),
                    objective=objective,
                    preset="tiny",
                    model={"max_seq_len": 512},
                    seq_len=128,
                    batch_size=16,
                    max_steps=steps,
                    lr=3e-3,
                    eval_interval=0,
                    log_interval=100,
                ),
                quiet=True,
            )
        runs[objective] = out
    return runs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--run", action="append", default=[], help="OBJECTIVE=RUN (default: train tiny Gutenberg runs)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ewok-every", type=int, default=10)
    p.add_argument("--entity-every", type=int, default=4)
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    data = layout(a.work, a.ewok_every, a.entity_every)
    runs = dict(r.split("=", 1) for r in a.run) if a.run else train_runs(a.work, a.steps)
    rows = []
    for objective, view, scorer, backend in COMBOS:
        if objective not in runs:
            continue
        run = Path(runs[objective])
        export = a.work / "hf" / objective
        if not export.exists():
            export_run(run, export)
        model = export / view if view else export
        t0 = time.time()
        tasks = [t for t, (_, folder) in SENTENCE_TASKS.items() if (data / folder).exists()]
        official = run_pipeline(
            model, backend, data, a.work / "results" / f"{objective}-{backend}", tasks=tasks, reading=True, timeout=7200
        )
        t_pipeline = time.time() - t0
        t0 = time.time()
        ours = evaluate_babylm(RunLM(run), data, scorer=scorer, convention="official")["tasks"]
        t_hlm = time.time() - t0
        for task in list(SENTENCE_TASKS) + ["reading_eye_tracking", "reading_self_paced"]:
            if task not in official or task not in ours:
                continue
            r = ours[task]
            want, scale = printed(official, task)
            # hlm's own convention: the same scores with no tie counted correct (a macro average of subsets)
            own = (
                sum((r["subsets"][k] * n - r["subset_ties"][k]) / n for k, n in r["subset_n"].items())
                / len(r["subset_n"])
                if "subset_ties" in r and task != "entity_tracking"
                else None
            )
            rows.append(
                (
                    task,
                    f"{objective}{'/' + view if view else ''}",
                    backend,
                    want,
                    scale * r["value"],
                    None if own is None else scale * own,
                    r["ties"],
                )
            )
        print(
            f"{objective}/{backend}: pipeline {t_pipeline:.0f} s, hlm --convention official {t_hlm:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    print("| task | export | backend | official pipeline | hlm `--convention official` | hlm (own convention) | ties |")
    print("|---|---|---|---|---|---|---|")
    for task, name, backend, want, got, mine, ties in sorted(rows):
        print(
            f"| {task} | {name} | {backend} | {want:.2f} | {got:.2f} | "
            f"{'—' if mine is None else f'{mine:.2f}'} | {ties} |"
        )
    (a.work / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Every objective as an in-context learner: BabyLM's GLUE tasks asked in context, by shots.

    python bench/in_context.py WORKDIR --data DATA [--steps 600] [--limit 200] [--shots 0,1,4,16]

Trains causal, masked, hybrid and diffusion (tiny models, seq_len 128, the same data and steps) on
prepared DATA (e.g. the gutenberg-10m slice bench/generation.py makes), then asks each run the
in-context tasks of `hlm eval harness --glue-data` (rte, mrpc, qqp, mnli, wsc: GPT-3's prompt formats,
the run's scorer, --limit validation items, shots drawn from train with the harness's fixed seed) and
prints the table of docs/results.md (accuracy ± standard error, the majority class).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
from pathlib import Path

from hybridlm.config import TrainConfig
from hybridlm.evaluate.harness import run_harness
from hybridlm.runs import RunDir
from hybridlm.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GLUE = SHARED / "babylm-2025" / "full_eval" / "glue_filtered"
OBJECTIVES = ("causal", "masked", "hybrid", "diffusion")
TASKS = "rte_icl,mrpc_icl,qqp_icl,mnli_icl,wsc_icl"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--shots", default="0,1,4,16")
    a = p.parse_args()
    root = Path(a.workdir)
    logging.disable(logging.WARNING)
    table = []
    for objective in OBJECTIVES:
        out = root / objective
        if not (out / "metrics.jsonl").is_file():
            train(TrainConfig(data=a.data, out=str(out), objective=objective, preset="tiny", seq_len=128,
                              batch_size=16, max_steps=a.steps, lr=2e-3, eval_interval=a.steps, eval_batches=16,
                              checkpoint_interval=a.steps, seed=0), quiet=True)  # fmt: skip
        for shots in (int(s) for s in a.shots.split(",")):
            name = f"harness-icl-{shots}shot.json"
            path = RunDir(out).eval_path(name)
            if path.is_file():
                result = json.loads(path.read_text())
            else:
                with contextlib.redirect_stderr(io.StringIO()):
                    result = run_harness(run=str(out), tasks=TASKS, glue_data=GLUE, num_fewshot=shots, limit=a.limit)
                RunDir(out).write_eval(name, result)
            for task, m in sorted(result["results"].items()):
                row = {"objective": objective, "scorer": result["scorer"], "task": task, "shots": shots,
                       "acc": m["acc,none"], "stderr": m["acc_stderr,none"], "majority": result["majority"][task],
                       "n": result["n"][task]}  # fmt: skip
                print(json.dumps(row), flush=True)
                table.append(row)
    tasks = sorted({r["task"] for r in table})
    shots = sorted({r["shots"] for r in table})
    print("\n| objective (scorer) | shots | " + " | ".join(tasks) + " |")
    print("|---|---|" + "---|" * len(tasks))
    for objective in OBJECTIVES:
        for k in shots:
            cells = {r["task"]: r for r in table if r["objective"] == objective and r["shots"] == k}
            if cells:
                scorer = next(iter(cells.values()))["scorer"]
                accuracies = " | ".join(f"{cells[t]['acc']:.3f} ± {cells[t]['stderr']:.3f}" for t in tasks)
                print(f"| {objective} ({scorer}) | {k} | {accuracies} |")
    majority = {r["task"]: r["majority"] for r in table}
    print("| majority class | — | " + " | ".join(f"{majority[t]:.3f}" for t in tasks) + " |")


if __name__ == "__main__":
    main()

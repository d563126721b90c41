"""Time of `hlm eval babylm` per task and scorer on the official fast_eval set, for a `small` model.

Speed does not depend on training, so the model has random weights (a run made on the spot, with a
16k BPE tokenizer trained on gutenberg-10m's validation text). Prints a table and appends it to
bench/RESULTS.md.

    python bench/babylm_fast_eval.py [--objectives causal,hybrid] [--tasks blimp,...] [--precision fp32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, append_results  # noqa: E402
from eval_throughput import make_run  # noqa: E402

from hybridlm.evaluate.babylm import evaluate_babylm  # noqa: E402
from hybridlm.evaluate.lm import RunLM  # noqa: E402
from hybridlm.objectives import objective_class  # noqa: E402
from hybridlm.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--objectives", default="causal", help="comma-separated; each is timed with each of its scorers in --scorers"
    )
    ap.add_argument("--scorers", default=None, help="comma-separated (default: each objective's default scorer)")
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--data", default=str(SHARED / "babylm-2025" / "fast_eval"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hlm-babylm-bench-"))
    train_tokenizer([SHARED / "gutenberg-10m" / "valid.txt"], 16384, tmp / "tok")
    V = load_tokenizer(tmp / "tok").get_vocab_size()
    tasks = a.tasks.split(",") if a.tasks else None
    rows = ["| objective | scorer | task | items | seconds | items/s |", "|---|---|---|---|---|---|"]
    for objective in a.objectives.split(","):
        run = make_run(tmp / objective, objective, "small", tmp / "tok", V)
        lm = RunLM(run, precision=a.precision)
        for scorer in a.scorers.split(",") if a.scorers else [objective_class(objective).scorers[0]]:
            t0 = time.time()
            result = evaluate_babylm(lm, a.data, tasks, scorer)
            for task, r in result["tasks"].items():
                rate = f"{r['n'] / r['seconds']:.1f}" if r["seconds"] >= 0.5 else "—"
                rows.append(f"| {objective} | {scorer} | {task} | {r['n']:,} | {r['seconds']:.0f} | {rate} |")
                print(rows[-1], flush=True)
            rows.append(f"| {objective} | {scorer} | **all** | | **{time.time() - t0:.0f}** | |")
            print(rows[-1], flush=True)
    notes = [
        f"data: {a.data}; model: small preset (random weights), vocab {V}; scoring precision {a.precision}",
        "reading_self_paced reuses the surprisals computed for reading_eye_tracking (its time is the regression)",
    ]
    append_results("BabyLM fast_eval time per task (bench/babylm_fast_eval.py)", rows, notes)


if __name__ == "__main__":
    main()

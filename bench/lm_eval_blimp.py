"""lm-evaluation-harness on local BLiMP files vs `hlm eval blimp`, same exported model.

lm-eval's built-in BLiMP task downloads from a hub; this writes task YAMLs over
../shared/data/blimp (or any BLiMP-format directory) instead, runs lm-eval's Python API on an
`hlm export` directory, and compares per-paradigm accuracy with hybridlm's scorer.

    python bench/lm_eval_blimp.py --hf-model EXPORT_DIR [--blimp DIR] [--paradigms 5] [--limit 100]

Note: lm-eval's `acc` takes argmax over the two sentences, so a tie counts as correct (index 0 is
the good sentence); hybridlm never counts ties. The two agree exactly when there are no ties.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402

TEMPLATE = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: multiple_choice
doc_to_text: ""
doc_to_target: 0
doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
num_fewshot: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def write_tasks(files, out: Path, limit: int | None) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for f in files:
        lines = [ln for ln in Path(f).read_text().splitlines() if ln.strip()][:limit]
        data = out / f"{f.stem}.jsonl"
        data.write_text("\n".join(lines) + "\n")
        name = f"blimp_local_{f.stem}"
        (out / f"{name}.yaml").write_text(TEMPLATE.format(task=name, file=data))
        names.append(name)
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf-model", required=True, help="an hlm export directory (LlamaForCausalLM)")
    ap.add_argument("--blimp", default=str(SHARED / "blimp"))
    ap.add_argument("--paradigms", type=int, default=5, help="how many paradigm files (0 = all 67)")
    ap.add_argument("--limit", type=int, default=100, help="pairs per paradigm")
    ap.add_argument("--results", action="store_true", help="append the timing to bench/RESULTS.md")
    a = ap.parse_args()
    import lm_eval
    from lm_eval.tasks import TaskManager

    from hybridlm.evaluate.blimp import evaluate_pairs, load_pairs
    from hybridlm.evaluate.lm import HFLM

    files = sorted(Path(a.blimp).glob("*.jsonl"))
    files = files[: a.paradigms] if a.paradigms else files
    tmp = Path(tempfile.mkdtemp(prefix="hlm-lmeval-"))
    tasks = write_tasks(files, tmp, a.limit)
    import time

    t = time.perf_counter()
    res = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={a.hf_model},dtype=float32",
        tasks=tasks,
        task_manager=TaskManager(include_path=str(tmp)),
        batch_size=32,
        device="cpu",
    )
    t_theirs = time.perf_counter() - t
    theirs = {name.removeprefix("blimp_local_"): res["results"][name]["acc,none"] for name in tasks}
    t = time.perf_counter()
    ours = evaluate_pairs(HFLM(a.hf_model), load_pairs(files, a.limit), "causal")
    t_ours = time.perf_counter() - t
    rows = {uid: (ours["paradigms"][uid]["accuracy"], theirs[uid]) for uid in theirs}
    for uid, (x, y) in rows.items():
        print(f"{uid:<55} hlm {x:.4f}  lm-eval {y:.4f}  {'=' if abs(x - y) < 1e-9 else 'DIFFERENT'}")
    print(f"ties in hlm scoring: {ours['ties']}")
    equal = all(abs(x - y) < 1e-9 for x, y in rows.values())
    print(json.dumps({"equal": equal, "paradigms": len(rows), "pairs": ours["n_pairs"]}))
    if a.results:
        from _common import append_results

        append_results(
            "Causal BLiMP scoring vs lm-evaluation-harness (bench/lm_eval_blimp.py)",
            [
                "| scorer | pairs | seconds | pairs/s | accuracy equal |",
                "|---|---|---|---|---|",
                f"| hlm eval blimp (causal, fp32) | {ours['n_pairs']:,} | {t_ours:.1f} | "
                f"{ours['n_pairs'] / t_ours:,.1f} | {equal} |",
                f"| lm-eval simple_evaluate (hf, float32, batch 32) | {ours['n_pairs']:,} | {t_theirs:.1f} | "
                f"{ours['n_pairs'] / t_theirs:,.1f} | |",
            ],
            [
                f"same exported model ({a.hf_model}); speed-up {t_theirs / t_ours:.1f}x; lm-eval's time includes "
                "its task setup"
            ],
        )


if __name__ == "__main__":
    main()

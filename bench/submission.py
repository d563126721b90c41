"""From a run to the BabyLM submission file, two ways on the same run: the official pipeline's own scripts on
hlm's export (`eval_zero_shot.sh` on main, `eval_zero_shot_fast.sh` on every chck_* branch, its AoA extractor,
`collate_preds.py`) against `hlm eval babylm --predictions` and `hlm submission`. Each step is timed as a user
runs it (a fresh process each), and the two submission files are compared as JSON.

    python bench/submission.py --work /tmp/submission [--every 10] [--checkpoints 5K,20K,80K]

The run is a `tiny` causal model trained a few seconds on a Gutenberg slice with words_N checkpoints (speed
does not depend on training). The data is the official full_eval / fast_eval, every --every-th item of BLiMP,
EWoK and entity tracking (the fast EWoK is encrypted: the first items of each full domain), the supplement,
WUG and reading whole, COMPS and WUG past tense on small files in their formats, AoA on each word's first
context. Both collators are given the revisions the run has and the sizes of this data in place of the
official ones; GLUE predictions (fine-tuning is not timed) are hlm's in both trees. The pipeline is copied
into --work (its scripts write `results/` beside themselves).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests"), str(ROOT / "tests" / "evaluate")]

from _common import SHARED, append_results, git_rev, machine  # noqa: E402
from test_pipeline_conformance import (  # noqa: E402
    COLLATE,
    GLUE_FIELDS,
    PIPELINE,
    _equal_json,
    _sizes,
    _subset,
    _write_comps_and_wug_past,
    write_aoa_and_glue,
)

AOA_PIPELINE = textwrap.dedent("""
    import runpy, sys
    from evaluation_pipeline.AoA_word import eval_util
    revisions = sys.argv[1].split(",")  # the run's branches in place of the official chck_1M ... chck_100M
    eval_util.StepConfig.generate_checkpoint_steps = lambda self, track: (
        revisions, [int(float(r[5:-1]) * {"K": 1e3, "M": 1e6}[r[-1]]) for r in revisions])
    sys.argv = ["run"] + sys.argv[2:]
    runpy.run_module("evaluation_pipeline.AoA_word.run", run_name="__main__", alter_sys=True)
""")


def hlm(*args) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "hybridlm.cli", *map(str, args)], check=True, capture_output=True)
    return time.time() - t0


def layout(work: Path, every: int) -> Path:
    data = work / "data"
    if data.exists():
        return data
    full, fast = SHARED / "babylm-2025" / "full_eval", SHARED / "babylm-2025" / "fast_eval"
    _subset(full / "blimp_filtered", data / "full" / "blimp_filtered", every=every)
    _subset(full / "supplement_filtered", data / "full" / "supplement_filtered", every=every)
    _subset(full / "ewok_filtered", data / "full" / "ewok_filtered", every=every)
    _subset(full / "entity_tracking", data / "full" / "entity_tracking", every=every)
    _subset(fast / "blimp_fast", data / "fast" / "blimp_fast", every=every)
    _subset(fast / "supplement_fast", data / "fast" / "supplement_fast")
    _subset(full / "ewok_filtered", data / "fast" / "ewok_fast", limit=max(1, 100 // every))
    _subset(fast / "entity_tracking_fast", data / "fast" / "entity_tracking_fast", every=every)
    for kind in ("full", "fast"):
        _subset(fast / "wug_adj_nominalization", data / kind / "wug_adj_nominalization")
        shutil.copytree(fast / "reading", data / kind / "reading")
        _write_comps_and_wug_past(data / kind)
    shutil.rmtree(data / "fast" / "comps")
    write_aoa_and_glue(data, rows=(16, 8))
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--checkpoints", default="5K,20K,80K")
    a = ap.parse_args()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = layout(work, a.every)
    checkpoints = a.checkpoints.split(",")
    revisions = [f"chck_{c}" for c in checkpoints]
    run = work / "run"
    if not run.exists():
        text = work / "train.txt"
        with open(SHARED / "gutenberg-10m" / "train.txt", encoding="utf-8") as f:
            text.write_text(f.read(1_500_000), encoding="utf-8")
        hlm("tokenizer", "train", "--input", text, "--vocab-size", "1024", "--out", work / "tok")
        hlm("prepare", "--input", text, "--tokenizer", work / "tok", "--out", work / "prepared")
        words = [x for c in checkpoints for x in ("--checkpoint-words", c)]
        hlm("train", "--data", work / "prepared", "--out", run, "--objective", "causal", "--preset", "tiny",
            "--seq-len", 128, "--batch-size", 16, "--max-steps", 120, "--eval-interval", 0, "--model",
            '{"max_seq_len": 512}', *words)  # fmt: skip
    times = {}
    # ---- hlm
    ours = work / "hlm-results"
    shutil.rmtree(ours, ignore_errors=True)
    official = ("--convention", "official", "--predictions", ours)
    times["zero-shot, main (full data)", "hlm"] = hlm(
        "eval", "babylm", "--run", run, "--data", data / "full", *official
    )
    times["fast zero-shot, every chck_*", "hlm"] = hlm(
        "eval", "babylm", "--run", run, "--data", data / "fast", "--all-checkpoints", *official
    )
    times["AoA, every chck_*", "hlm"] = hlm(
        "eval", "babylm", "--run", run, "--data", data / "aoa_data", "--tasks", "aoa", "--all-checkpoints", *official
    )
    for task in GLUE_FIELDS:
        hlm("finetune", "--run", run, "--task", task, "--data", data / "glue", "--epochs", 1, "--predictions", ours)
    # ---- the pipeline's scripts, on the export
    pipeline = work / "pipeline"
    if not pipeline.exists():
        shutil.copytree(PIPELINE, pipeline)
    shutil.rmtree(pipeline / "results", ignore_errors=True)
    export = work / "hf" / "run"
    shutil.rmtree(work / "hf", ignore_errors=True)
    times["export --all-checkpoints", "pipeline"] = hlm(
        "export", "--run", run, "--out", export, "--all-checkpoints", "--repo-id", "me/run"
    )
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # its scripts call `python`
    env = {**os.environ, "HF_HUB_CACHE": str(export / ".hub-cache"), "PYTHONPATH": str(pipeline), "PATH": path}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

    def script(*args) -> float:
        t0 = time.time()
        subprocess.run(list(map(str, args)), cwd=pipeline, env=env, check=True, capture_output=True)
        return time.time() - t0

    times["zero-shot, main (full data)", "pipeline"] = script(
        "bash", "eval_zero_shot.sh", export, "causal", data / "full"
    )
    times["fast zero-shot, every chck_*", "pipeline"] = sum(
        script("bash", "eval_zero_shot_fast.sh", "me/run", r, "causal", data / "fast") for r in revisions
    )
    times["AoA, every chck_*", "pipeline"] = script(
        sys.executable, "-c", AOA_PIPELINE, ",".join(revisions), "--model_name", "me/run", "--backend", "causal",
        "--track_name", "strict-small", "--word_path", data / "aoa_data" / "aoa" / "cdi_childes.json",
    )  # fmt: skip
    theirs = pipeline / "results"
    shutil.copytree(ours / "run" / "main" / "finetune", theirs / "run" / "main" / "finetune")
    # ---- collation, each side on its own tree
    sizes, checks = _sizes(data)
    job = {"checks": [revisions, *checks[1:]], "model": "run", "results": str(theirs), "fast_data": str(data / "fast")}
    (work / "job.json").write_text(json.dumps(job))
    times["collate", "pipeline"] = script(sys.executable, "-c", COLLATE, work / "job.json")
    collate = textwrap.dedent(f"""
        import json
        from hybridlm.evaluate import submission
        out = submission.collate({str(ours / "run")!r}, "causal", "strict-small", {str(data / "fast")!r},
                                 {revisions!r}, json.load(open({str(work / "sizes.json")!r})))
        open({str(work / "hlm-submission.json")!r}, "w").write(json.dumps(out))
    """)
    (work / "sizes.json").write_text(json.dumps(sizes))
    t0 = time.time()
    subprocess.run([sys.executable, "-c", collate], check=True)
    times["collate", "hlm"] = time.time() - t0
    print(json.dumps({f"{step} ({side})": round(v, 1) for (step, side), v in times.items()}))
    mine = json.loads((work / "hlm-submission.json").read_text())
    other = json.loads((theirs / "run" / "all_full_preds_and_fast_scores_causal.json").read_text())
    other["aoa"]["metadata"]["model_name"] = mine["aoa"]["metadata"]["model_name"]  # each records the name it was given
    _equal_json(mine, other, rel=1e-4, abs_=1e-4)  # the pipeline's surprisals are fp32 sums, hlm's fp64
    steps = list(dict.fromkeys(s for s, _ in times))
    table = ["| step | official pipeline (s) | hlm (s) | speed-up |", "|---|---|---|---|"]
    for step in steps:
        p, h = times.get((step, "pipeline")), times.get((step, "hlm"))
        ratio = f"{p / h:.1f}x" if p and h else ""
        table.append(f"| {step} | {p:.1f} | {h:.1f} | {ratio} |" if h else f"| {step} | {p:.1f} | — | |")
    total_p = sum(v for (_, side), v in times.items() if side == "pipeline")
    total_h = sum(v for (_, side), v in times.items() if side == "hlm")
    table.append(f"| **total** | {total_p:.1f} | {total_h:.1f} | {total_p / total_h:.1f}x |")
    notes = [
        f"`python bench/submission.py --work {a.work} --every {a.every} --checkpoints {a.checkpoints}` ({git_rev()}); "
        f"{machine()}",
        f"a tiny causal run, revisions {', '.join(revisions)}; every {a.every}th item of BLiMP, EWoK and entity "
        "tracking; the two submission files equal as JSON (floats to 1e-4)",
    ]
    print("\n".join(table + [""] + notes))
    append_results("The BabyLM submission: the pipeline's scripts against hlm, from a run to the file", table, notes)


if __name__ == "__main__":
    main()

"""`hlm eval babylm --convention official` against the official BabyLM 2025 pipeline: wall time per backend on
the same export, the same items, the fast_eval suite (BLiMP, supplement, EWoK, entity tracking, wug, reading),
next to the proof that both print the same numbers.

    python bench/pipeline_speed.py --work /tmp/pipeline-speed [--every 20] [--repeats 1] [--preset small]

Each backend's model is a `small` run with random weights (speed does not depend on training; a 16k BPE
trained on gutenberg-10m's validation text) and its export: causal (the pipeline's `causal` backend on the
LlamaForCausalLM export, hlm's causal scorer on the run), masked (`mlm`, hlm's pll) and the hybrid's masked
view (`mntp`, hlm's mntp). Both sides run as a user runs them, in a fresh process each (imports, model loading
and tokenisation included): the pipeline's own entry points from ../shared/reference/evaluation-pipeline-2025
(one process for all tasks, as tests/evaluate/test_pipeline_conformance.py runs them) and `hlm eval babylm`,
alternating, the median of --repeats. To fit a CPU, every --every-th item of BLiMP, EWoK (its fast set is
encrypted: a slice of the full one) and entity tracking is kept; the supplement, wug and reading whole.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests"), str(ROOT / "tests" / "evaluate")]

from _common import SHARED, append_results  # noqa: E402
from eval_throughput import make_run  # noqa: E402
from pipeline_conformance import printed  # noqa: E402
from test_pipeline_conformance import SENTENCE_TASKS, run_pipeline  # noqa: E402

from hybridlm.export import export_run  # noqa: E402
from hybridlm.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402

# (objective, view of its export, hlm scorer, the pipeline's backend)
BACKENDS = [("causal", "", "causal", "causal"), ("masked", "", "pll", "mlm"), ("hybrid", "masked_lm", "mntp", "mntp")]
TASKS = ("blimp", "supplement", "ewok", "entity_tracking", "wug_adj")


def layout(work: Path, every: int) -> Path:
    data = work / "data"
    if data.exists():
        return data
    fast, full = SHARED / "babylm-2025" / "fast_eval", SHARED / "babylm-2025" / "full_eval"
    for folder, src, step in (
        ("blimp_fast", fast / "blimp_fast", every),
        ("supplement_fast", fast / "supplement_fast", 1),
        ("ewok_filtered", full / "ewok_filtered", 2 * every),
        ("entity_tracking", fast / "entity_tracking_fast", every),
        ("wug_adj_nominalization", fast / "wug_adj_nominalization", 1),
    ):
        (data / folder).mkdir(parents=True)
        for f in sorted(src.glob("*.jsonl")):
            lines = f.read_text(encoding="utf-8").splitlines()[::step]
            (data / folder / f.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "reading").symlink_to(fast / "reading")
    return data


def hlm_eval(run: Path, scorer: str, data: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "hybridlm.cli", "eval", "babylm", "--run", str(run), "--data", str(data)]
    cmd += ["--scorer", scorer, "--convention", "official", "--device", "cpu", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())["tasks"]


def agree(official: dict, ours: dict) -> tuple[int, int, float]:
    """(tasks compared, tasks whose printed numbers agree to the pipeline's two decimals, largest gap)."""
    compared = same = 0
    gap = 0.0
    for task in (*TASKS, "reading_eye_tracking", "reading_self_paced"):
        if task not in official or task not in ours:
            continue
        want, scale = printed(official, task)
        got = round(scale * ours[task]["value"], 2)
        compared += 1
        same += abs(got - want) <= 0.0051
        gap = max(gap, abs(got - want))
    return compared, same, gap


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--every", type=int, default=20, help="keep every N-th BLiMP / entity item (EWoK: every 2N-th)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--preset", default="small")
    p.add_argument("--backends", default="causal,mlm,mntp")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    data = layout(a.work, a.every)
    tok = a.work / "tok"
    if not (tok / "tokenizer.json").exists():
        train_tokenizer([SHARED / "gutenberg-10m" / "valid.txt"], 16384, tok)
    V = load_tokenizer(tok).get_vocab_size()
    rows = [
        "| backend | export | items | official pipeline s | hlm s | speed-up | tasks with the same printed numbers |",
        "|---|---|---|---|---|---|---|",
    ]
    items = {
        t: sum(len(f.read_text().splitlines()) for f in (data / SENTENCE_TASKS[t][1]).glob("*.jsonl")) for t in TASKS
    }
    for objective, view, scorer, backend in BACKENDS:
        if backend not in a.backends.split(","):
            continue
        run = a.work / "runs" / objective
        if not run.exists():
            make_run(run, objective, a.preset, tok, V)
        export = a.work / "hf" / objective
        if not export.exists():
            export_run(run, export)
        model = export / view if view else export
        times = {"pipeline": [], "hlm": []}
        for r in range(a.repeats):
            t0 = time.perf_counter()
            official = run_pipeline(model, backend, data, a.work / "results" / f"{backend}-{r}", tasks=TASKS,
                                    timeout=7200)  # fmt: skip
            times["pipeline"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours = hlm_eval(run, scorer, data, a.work / f"hlm-{backend}-{r}.json")
            times["hlm"].append(time.perf_counter() - t0)
            print(backend, {k: round(v[-1], 1) for k, v in times.items()}, flush=True)
        compared, same, gap = agree(official, ours)
        t_pipe, t_hlm = statistics.median(times["pipeline"]), statistics.median(times["hlm"])
        per_task = ", ".join(f"{t} {ours[t]['seconds']:.0f}" for t in ours)
        rows.append(
            f"| {backend} | {objective}{'/' + view if view else ''} | {sum(items.values()):,} + reading | "
            f"{t_pipe:.0f} | {t_hlm:.0f} | {t_pipe / t_hlm:.2f}x | {same} of {compared} (largest gap {gap:.2f}) |"
        )
        print(rows[-1], f"(hlm per task, s: {per_task})", flush=True)
    notes = [
        f"items: {', '.join(f'{t} {n:,}' for t, n in items.items())}, reading whole (every {a.every}-th BLiMP and "
        f"entity-tracking item, every {2 * a.every}-th of the full EWoK); model: {a.preset}, random weights, vocab {V}",
        "wall time of a fresh process per side (imports, model loading, tokenisation, scoring), alternating; "
        f"median of {a.repeats}; fp32 on both sides",
    ]
    append_results("hlm eval babylm vs the official pipeline (bench/pipeline_speed.py)", rows, notes)


if __name__ == "__main__":
    main()

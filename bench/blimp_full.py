"""Full BLiMP for one run, one paradigm at a time, resumable: each paradigm's pair scores are saved
as they finish, so a stopped run (hours of PLL on a CPU) continues where it was.

    python bench/blimp_full.py --run RUN --out DIR [--scorer S] [--precision fp32|bf16] [--data DIR]

Writes DIR/<UID>.json per paradigm and DIR/blimp.json (the `hlm eval blimp --json` schema) once
all are done; prints the elapsed time per paradigm and in all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402

from hybridlm.evaluate.blimp import aggregate, evaluate_pairs, load_pairs  # noqa: E402
from hybridlm.evaluate.lm import load_lm  # noqa: E402
from hybridlm.evaluate.scoring import check_scorer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run")
    ap.add_argument("--hf-model")
    ap.add_argument("--trust-remote-code", action="store_true", help="--hf-model: run the code shipped in the folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--scorer")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--data", default=str(SHARED / "blimp"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_lm(a.run, a.hf_model, precision=a.precision, trust_remote_code=a.trust_remote_code)
    scorer = check_scorer(lm, a.scorer)
    files = sorted(Path(a.data).glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no *.jsonl paradigm files in {a.data}")
    pairs, good, bad, seconds = [], [], [], 0.0
    for f in files:
        part = out / f"{f.stem}.json"
        rows = load_pairs([f])
        if part.is_file():
            done = json.loads(part.read_text())
            if (done["scorer"], done["precision"]) != (scorer, a.precision):
                raise SystemExit(
                    f"{part} was scored with {done['scorer']} ({done['precision']}), not {scorer} "
                    f"({a.precision}): use another --out"
                )
        else:
            t0 = time.perf_counter()
            r = evaluate_pairs(lm, rows, scorer)
            done = {
                "seconds": time.perf_counter() - t0,
                "scorer": r["scorer"],
                "precision": a.precision,
                "pairs": r["pairs"],
            }
            tmp = part.with_suffix(".tmp")
            tmp.write_text(json.dumps(done))
            os.replace(tmp, part)
            acc = sum(p["correct"] for p in r["pairs"]) / len(r["pairs"])
            print(f"{f.stem:<50} {acc:6.1%}  {done['seconds']:6.1f} s", flush=True)
        pairs += rows
        good += [p["good"] for p in done["pairs"]]
        bad += [p["bad"] for p in done["pairs"]]
        seconds += done["seconds"]
    result = aggregate(pairs, good, bad, scorer, lm.name)
    result.update(precision=a.precision, seconds=seconds)
    (out / "blimp.json").write_text(json.dumps({k: v for k, v in result.items() if k != "pairs"}, indent=1))
    print(
        f"macro accuracy {result['macro_accuracy']:.1%} ± {result['macro_stderr']:.1%} over {len(result['paradigms'])} "
        f"paradigms, {result['n_pairs']} pairs, {result['ties']} ties, scorer {result['scorer']} ({a.precision}), "
        f"{seconds / 60:.1f} min of scoring"
    )


if __name__ == "__main__":
    main()

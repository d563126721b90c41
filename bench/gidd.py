"""GIDD's uniform noise against masking at equal training tokens (issue 40, part 1): validation bits per byte.

    python bench/gidd.py WORKDIR [--steps 1000] [--p 0.1,0.5] [--seeds 0] [--only NAME,...]

The demo grammar and the shape of bench/generation.py's grammar runs (705k parameters, 32 x 64 tokens a step):
`diffusion` (p = 0: masking) against `gidd` at each p_uniform, with the bound's weights (elbo) and GIDD's
recipe (dynamic). Every number is a bound (the NELBO) in bits per byte. Writes WORKDIR/gidd.jsonl as it goes.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from generation import make_grammar  # noqa: E402

from hybridlm.config import TrainConfig  # noqa: E402
from hybridlm.train import train  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--p", default="0.1,0.5")
    p.add_argument("--seeds", default="0")
    p.add_argument("--only", default=None, help="comma-separated run names, e.g. diffusion,gidd-p0.1-dynamic")
    a = p.parse_args()
    root = Path(a.workdir)
    (root / "grammar").mkdir(parents=True, exist_ok=True)
    data = make_grammar(root / "grammar")
    n = a.steps
    shape = dict(
        preset="tiny",
        model={"d_model": 128, "n_head": 4, "d_ffn": 384, "n_layer": 3},
        seq_len=64,
        batch_size=32,
        max_steps=n,
        lr=1.5e-3,
        eval_interval=n,
        eval_batches=16,
        checkpoint_interval=n,
    )
    arms = [("diffusion", {"objective": "diffusion"})]
    for pu in (float(x) for x in a.p.split(",")):
        for weighting in ("elbo", "dynamic"):
            arms.append((f"gidd-p{pu:g}-{weighting}", {"objective": "gidd",
                         "options": {"p_uniform": pu, "loss_weighting": weighting}}))  # fmt: skip
    for seed in (int(s) for s in a.seeds.split(",")):
        for name, options in arms:
            if a.only and name not in a.only.split(","):
                continue
            out = root / "runs" / f"{name}-seed{seed}"
            if (out / "metrics.jsonl").is_file():
                continue
            t0 = time.time()
            summary = train(TrainConfig(data=str(data), out=str(out), seed=seed, **shape, **options), quiet=True)
            record = {"run": name, "seed": seed, "val_loss": summary["val_loss"], "val_bpb": summary["val_bpb"],
                      "tokens": summary["tokens_seen"], "seconds": round(time.time() - t0, 1)}  # fmt: skip
            with open(root / "gidd.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

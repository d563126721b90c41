"""torchrun with 2 CPU processes (gloo) trains exactly like 1 process with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import hlm

pytestmark = pytest.mark.slow  # torchrun with two processes: make test runs it, make test-fast does not

ARGS = [
    "--objective",
    "hybrid",
    "--preset",
    "tiny",
    "--seq-len",
    32,
    "--batch-size",
    8,
    "--log-interval",
    1,
    "--eval-interval",
    3,
    "--eval-batches",
    2,
    "--precision",
    "fp32",
    "--seed",
    5,
    "--causal-fraction",
    0.25,
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n, *args):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={n}",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
        "-m",
        "hybridlm.cli",
        "train",
        *map(str, args),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _losses(run, key="loss"):
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, data_dir, mode):
    torchrun(2, "--data", data_dir, "--out", tmp_path / "two", "--max-steps", 6, "--distributed", mode, *ARGS)
    hlm("train", "--data", data_dir, "--out", tmp_path / "one", "--max-steps", 6, *ARGS)
    two, one = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert sorted(two) == sorted(one) == list(range(1, 7))
    for s in one:
        assert two[s] == pytest.approx(one[s], rel=1e-5), (s, two[s], one[s])
    g2, g1 = _losses(tmp_path / "two", "grad_norm"), _losses(tmp_path / "one", "grad_norm")
    assert all(g2[s] == pytest.approx(g1[s], rel=1e-4) for s in g1)  # the whole model's norm, not one shard's
    for key in ("val_loss", "val_ce_causal", "val_bpb"):  # validation through the wrapped model: the same numbers
        v2, v1 = _losses(tmp_path / "two", key), _losses(tmp_path / "one", key)
        assert sorted(v2) == sorted(v1) == [3, 6] and all(v2[s] == pytest.approx(v1[s], rel=1e-5) for s in v1), key


def test_resume_a_two_process_run_on_one_process(tmp_path, data_dir):
    torchrun(2, "--data", data_dir, "--out", tmp_path / "run", "--max-steps", 8, "--checkpoint-interval", 4, *ARGS)
    # drop the final checkpoint, as if the 2-process run had been killed after step 4
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_0000008")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step_0000004\n")
    hlm("train", "--out", tmp_path / "run", "--resume")
    hlm("train", "--data", data_dir, "--out", tmp_path / "ref", "--max-steps", 8, *ARGS)
    got, want = _losses(tmp_path / "run"), _losses(tmp_path / "ref")
    for s in range(5, 9):
        assert got[s] == pytest.approx(want[s], rel=1e-5), s

"""Shared fixtures: a grammar corpus, a small tokenizer and prepared data, made once per session."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hybridlm.data import prepare
from hybridlm.grammar import write_corpus
from hybridlm.tokenizer import train_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# hlm runs in this process too (the `cli` fixture): no tokenizer threads that a later fork would warn about
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# the harness and datasets read local task files here: never a hub (CI reaches package registries only)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", n_words=40_000, seed=3)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer([corpus], vocab_size=320, out_dir=out)
    return out


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, corpus, tokenizer_dir) -> Path:
    out = tmp_path_factory.mktemp("data")
    prepare([corpus], tokenizer_dir, out, val_fraction=0.05)
    return out


def hlm(*args, check=True, timeout=300, **kw):
    """Run the CLI in a subprocess (as a user would); returns the CompletedProcess."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "hybridlm.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hlm {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def train_until_killed(args, out, step: int) -> None:
    """`hlm train ARGS --out OUT` in a subprocess, SIGKILLed once checkpoint `step` is on disk."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridlm.cli", "train", *map(str, args), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 120
    while not (out / "checkpoints" / f"step_{step:07d}").is_dir():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


class Result:
    def __init__(self, code, stdout, stderr):
        self.returncode, self.stdout, self.stderr = code, stdout, stderr


def run_cli(capsys, *args, check=False) -> Result:
    """The CLI in this process (fast: no interpreter start-up): exit status, stdout and stderr, as a
    subprocess would give them."""
    from hybridlm.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    if check and code != 0:
        raise AssertionError(f"hlm {' '.join(map(str, args))} failed:\n{out.out}\n{out.err}")
    return Result(code, out.out, out.err)


@pytest.fixture
def cli(capsys):
    """hlm in this process, like `hlm` (check=True by default)."""

    def call(*args, check=True):
        return run_cli(capsys, *args, check=check)

    return call


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hlm: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


@pytest.fixture(scope="session")
def runs(tmp_path_factory, data_dir) -> dict:
    """One briefly trained tiny run per objective."""
    from hybridlm.config import TrainConfig
    from hybridlm.train import train

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for objective in ("causal", "masked", "hybrid", "diffusion"):
        cfg = TrainConfig(
            data=str(data_dir),
            out=str(root / objective),
            objective=objective,
            preset="tiny",
            seq_len=32,
            batch_size=8,
            max_steps=30,
            lr=3e-3,
            eval_interval=0,
            log_interval=10,
        )
        train(cfg, quiet=True)
        out[objective] = root / objective
    return out

"""What the tests share, beside conftest's fixtures: the tiny run's settings, hlm in a subprocess or in this
process, the one-line-error check, torchrun, and small stand-in models."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from hybridlm.evaluate.lm import ScoringLM
from hybridlm.objectives.diffusion import DiffusionObjective

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# ---------------------------------------------------------------- the tiny run
TINY = dict(preset="tiny", seq_len=32, batch_size=8)  # every test run's shape: a step is milliseconds on 2 cores


def tiny_config(data, out, **fields):
    """A TrainConfig of the tiny shape (fields override or add: objective=, max_steps=, lr=, ...)."""
    from hybridlm.config import TrainConfig

    return TrainConfig(data=str(data), out=str(out), **{**TINY, **fields})


def tiny_flags(**fields) -> list:
    """`hlm train` flags of the tiny shape and `fields` (max_steps=4 -> --max-steps 4; True -> the bare flag)."""
    flags = []
    for key, value in {**TINY, **fields}.items():
        flags += [f"--{key.replace('_', '-')}"] + ([] if value is True else [value])
    return flags


# ---------------------------------------------------------------- hlm, as a user runs it
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


def train_until_killed(args, out, step: int, command: str = "train") -> None:
    """`hlm train ARGS --out OUT` (or another training command) in a subprocess, SIGKILLed once checkpoint `step`
    is on disk."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridlm.cli", command, *map(str, args), "--out", str(out)],
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


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hlm: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


def assert_train_refused(cli, data_dir, out, flags, *needles) -> None:
    """`hlm train` of a tiny run with `flags` is a one-line error naming `needles`, and writes nothing."""
    proc = cli("train", "--data", data_dir, "--out", out, *tiny_flags(max_steps=1), *flags, check=False)
    assert_one_line_error(proc, *needles)
    assert not Path(out).exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n, *args):
    """`hlm train ARGS` under torchrun with n CPU processes (gloo)."""
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


# ---------------------------------------------------------------- stand-in models
HF_SHAPE = dict(
    vocab_size=320,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
    pad_token_id=0,
)


def tiny_hf_model(out, model_cls, config, tokenizer_dir):
    """A randomly initialised tiny transformers model with our tokenizer, saved to `out`."""
    import transformers

    torch.manual_seed(0)
    model_cls(config).save_pretrained(out)
    transformers.PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir)).save_pretrained(out)
    return out


class FakeLM(ScoringLM):
    """Uniform predictions over the vocabulary; words split on spaces."""

    name, bos_id, mask_id, max_len = "fake", 1, 3, 64

    def __init__(self, V=50, objective=DiffusionObjective):
        self.V, self.objective = V, objective(V)

    def tokenize(self, text):
        ids, starts = [], []
        for word in text.split():
            for k, ch in enumerate(word):
                ids.append(5 + ord(ch) % (self.V - 5))
                starts.append(k == 0)
        return ids, starts

    def selected_logits(self, ids, lengths, attention, select):
        return torch.zeros(int(select.sum()), self.V)


def metric_rows(run) -> list[dict]:
    """RUN/metrics.jsonl, a dict a row."""
    return [json.loads(ln) for ln in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def logged(run, key="loss") -> dict:
    """step -> the value of `key` in the run's logged rows that have it."""
    return {r["step"]: r[key] for r in metric_rows(run) if key in r}

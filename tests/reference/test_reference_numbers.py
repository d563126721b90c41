"""Reference numbers (torchtitan's stored loss curves): for every objective and option combination
the tests use, the first 20 training losses, the validation metrics and a few sentence scores of a
tiny fp32 run, compared with `reference_numbers.json`.

Recorded on one machine, they are bit-identical on the same CPU model (the same seed fixes data order,
masking and initialisation); another CPU sums matmuls in another order, so elsewhere they agree to a
relative 1e-4. Rewrite the file after a change that is meant to move the numbers:
    HLM_UPDATE_REFERENCE=1 pytest tests/reference
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import pytest
import torch

from hybridlm.config import TrainConfig
from hybridlm.evaluate.lm import RunLM
from hybridlm.evaluate.scoring import score_sentences
from hybridlm.train import train

FILE = Path(__file__).with_name("reference_numbers.json")
UPDATE = os.environ.get("HLM_UPDATE_REFERENCE") == "1"
SENTENCES = ["the dog near the cats sleeps .", "every boy that the sheep saw runs .", "a red cat ."]

COMBINATIONS = {
    "causal": {"objective": "causal"},
    "causal-mtp": {"objective": "causal", "mtp_heads": 3, "mtp_weights": [1.0, 0.5]},
    "masked": {"objective": "masked"},
    "masked-span5": {"objective": "masked", "max_span": 5, "mask_ratio_start": 0.4, "mask_ratio_end": 0.2},
    "hybrid": {"objective": "hybrid"},
    "hybrid-zloss": {"objective": "hybrid", "causal_fraction": 0.5, "z_loss": 1e-4},
    "diffusion-loglinear": {"objective": "diffusion", "schedule": "loglinear"},
    "diffusion-linear": {"objective": "diffusion", "schedule": "linear"},
    "diffusion-cosine": {"objective": "diffusion", "schedule": "cosine"},
    "diffusion-frequency": {"objective": "diffusion", "frequency_masking": 1.0},
    "diffusion-count": {"objective": "diffusion", "diffusion_estimator": "count"},
    "mntp": {"objective": "mntp"},
    "prefix": {"objective": "prefix", "prefix_min": 0.2, "prefix_max": 0.6},
    "mix": {"objective": "mix", "mix": "causal:1,mntp:3"},
    "mix-end": {"objective": "mix", "mix": "causal:1,mntp:3", "mix_end": "causal:1,mntp:1"},
    "mix-phases": {"objective": "mix", "mix_phases": [[0.0, "causal:1"], [0.5, "mntp:1,diffusion:1"]]},
    "mix-mtp": {"objective": "mix", "mix": "causal:1,masked:1", "mtp_heads": 2},
    "block-diffusion": {"objective": "block_diffusion", "block_size": 4, "noise_clip_min": 0.2, "noise_clip_max": 0.9},
    "distill": {"objective": "causal", "distill_from": ["TEACHER"], "distill_alpha": 0.3},
    "distill-hybrid": {"objective": "hybrid", "distill_from": ["TEACHER"]},
    "hybrid-lamb-ema": {"objective": "hybrid", "optimizer": "lamb", "ema_decay": 0.9, "ema_warmup": True},
    "causal-muon": {"objective": "causal", "optimizer": "muon"},
    "diffusion-bimodal": {
        "objective": "diffusion",
        "schedule": "bimodal-gaussian",
        "loss_weight_power": 0.1,
        "bimodal_right_initial": 0.4,
    },
    "hybrid-batch-warmup": {"objective": "hybrid", "batch_warmup": 4},
    "diffusion-winner": {
        "objective": "diffusion",
        "schedule": "bimodal-gaussian",
        "loss_weight_power": 0.1,
        "time_conditioning": True,
        "cond_dim": 32,
        "frequency_method": "rank",
        "pow_frequency": 0.02,
        "mask_curriculum": True,
    },
}


def _config(data_dir, out, options) -> TrainConfig:
    return TrainConfig(
        data=str(data_dir),
        out=str(out),
        preset="tiny",
        seq_len=32,
        batch_size=8,
        max_steps=20,
        lr=3e-3,
        precision="fp32",
        eval_interval=20,
        eval_batches=2,
        log_interval=1,
        checkpoint_interval=20,
        seed=7,
        **options,
    )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("reference") / "teacher"
    train(
        TrainConfig(
            data=str(data_dir),
            out=str(out),
            preset="tiny",
            seq_len=32,
            batch_size=8,
            max_steps=10,
            lr=3e-3,
            precision="fp32",
            eval_interval=0,
            seed=1,
        ),
        quiet=True,
    )
    return out


def measure(data_dir, out: Path, options: dict) -> dict:
    summary = train(_config(data_dir, out, options), quiet=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    validation = {k: v for r in records for k, v in r.items() if k.startswith("val_")}
    lm = RunLM(out)
    scores = {scorer: score_sentences(lm, SENTENCES, scorer) for scorer in lm.scorers}
    return {"losses": losses, "validation": validation, "scores": scores, "steps": summary["steps"]}


def _cpu_model() -> str:
    """Vendor, family and model: two CPUs with the same vector units (AVX512 on an Ice Lake and on a Sapphire
    Rapids) can still order a matmul's sums differently, so bit-identity is expected on the same model only."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    first = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    return f"{first.get('vendor_id', '?')} family {first.get('cpu family', '?')} model {first.get('model', '?')}"


def _machine() -> str:
    return (
        f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {_cpu_model()}, "
        f"{torch.get_num_threads()} threads"
    )


def _close(a, b, exact: bool, where: str):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), (where, sorted(a), sorted(b))
        for k in a:
            _close(a[k], b[k], exact, f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), (where, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, exact, f"{where}[{i}]")
    elif exact:
        assert a == b, (where, a, b)
    else:
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), (where, a, b)


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_numbers_match_the_reference(name, tmp_path, data_dir, teacher):
    options = dict(COMBINATIONS[name])
    if "distill_from" in options:
        options["distill_from"] = [str(teacher)]
    got = measure(data_dir, tmp_path / name, options)
    assert len(got["losses"]) == 20 and got["steps"] == 20
    stored = json.loads(FILE.read_text()) if FILE.is_file() else {"machine": _machine(), "runs": {}}
    recorded_on = stored.setdefault("recorded_on", {})  # a run recorded apart from the rest, on its machine
    if UPDATE:
        stored["runs"][name] = got
        recorded_on[name] = _machine()
        if _machine() == stored["machine"]:  # the file's own machine: nothing apart to record
            del recorded_on[name]
        if all(recorded_on.get(n) == _machine() for n in stored["runs"]):  # all recorded here: one machine
            stored["machine"], stored["recorded_on"] = _machine(), {}
        FILE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
        return
    assert name in stored["runs"], f"no reference for {name}: record it with HLM_UPDATE_REFERENCE=1"
    machine = recorded_on.get(name, stored["machine"])
    _close(got, stored["runs"][name], exact=machine == _machine(), where=name)

"""Curricula and selection (issue: data-efficiency knobs): CLIMB's pacing functions, the easiest share
of the windows per step, batches that are a pure function of (seed, step, scores) for any number of
processes and after a resume, and selection by a reference run's loss (hlm score-windows)."""

import json

import numpy as np
import pytest
from helpers import assert_one_line_error, tiny_flags, torchrun, train_until_killed

from hybridlm.config import TrainConfig
from hybridlm.curriculum import CurriculumSampler, pacing, window_scores
from hybridlm.train import train

# CLIMB's definitions (after google-research/understanding-curricula), total 100 steps, growing from
# 10% to 70% of training, from the easiest 20%; at steps 0, 10, 25, 40, 69, 70, 90
CLIMB = {
    "linear": [0.2, 0.2, 0.4, 0.6, 0.9866666667, 1.0, 1.0],
    "quadratic": [0.2, 0.2, 0.25, 0.4, 0.9735555556, 1.0, 1.0],
    "root": [0.2, 0.2, 0.6, 0.7656854249, 0.9933053216, 1.0, 1.0],
    "step": [0.2, 0.2, 0.2, 0.2, 0.2, 1.0, 1.0],
    "exponential": [0.2, 0.2, 0.200406166, 0.2053542807, 0.8771798039, 1.0, 1.0],
    "log": [0.2, 0.2, 0.8891109778, 0.9445554892, 0.998659124, 1.0, 1.0],
}
TINY = tiny_flags(eval_interval=0)


@pytest.mark.parametrize("name", list(CLIMB))
def test_pacing_functions_are_climbs(name):
    g = pacing(name, 100, 0.1, 0.7)
    assert [g(t) for t in (0, 10, 25, 40, 69, 70, 90)] == pytest.approx(CLIMB[name], abs=1e-9)


def test_early_steps_draw_from_the_easiest_windows(data_dir):
    scores = window_scores("unigram", data_dir, 32)
    sampler = CurriculumSampler(scores, "linear:0.1,0.7", 100)
    easiest = np.sort(scores)[int(np.ceil(0.2 * len(scores))) - 1]
    early = np.concatenate([sampler.batch_windows(s, 64, seed=1) for s in range(10)])
    assert scores[early].max() <= easiest  # the first steps see the easiest 20% only
    late = np.concatenate([sampler.batch_windows(s, 64, seed=1) for s in range(80, 90)])
    assert scores[late].max() > easiest
    assert np.array_equal(sampler.batch_windows(5, 8, 1), sampler.batch_windows(5, 8, 1))  # (seed, step) -> batch
    assert not np.array_equal(sampler.batch_windows(5, 8, 1), sampler.batch_windows(5, 8, 2))


@pytest.mark.slow
def test_curriculum_batches_for_one_and_two_processes_and_after_sigkill(cli, data_dir, tmp_path):
    args = ("--data", data_dir, "--curriculum", "length", "--pacing", "root:0,0.5", "--max-steps", 100, *TINY,
            "--log-interval", 1, "--checkpoint-interval", 2, "--precision", "fp32")  # fmt: skip
    cli("train", *args, "--out", tmp_path / "one")
    killed = tmp_path / "killed"
    train_until_killed(args, killed, 4)
    assert int((killed / "checkpoints" / "latest").read_text().strip().split("_")[1]) < 100
    cli("train", "--out", killed, "--resume")
    torchrun(2, *args, "--out", tmp_path / "two")

    def losses(run):
        return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}

    one, again, two = losses(tmp_path / "one"), losses(killed), losses(tmp_path / "two")
    assert again == one  # the same batches after SIGKILL and resume: the same losses, bit for bit
    assert [two[s] for s in range(1, 101)] == pytest.approx([one[s] for s in range(1, 101)], rel=1e-4)  # 2 processes


def test_selection_by_a_reference_runs_loss(cli, runs, data_dir, tmp_path):
    out = tmp_path / "scores.npy"
    cli("score-windows", "--run", runs["causal"], "--data", data_dir, "--out", out, "--seq-len", 32)
    scores = np.load(out)
    assert scores.shape == (window_scores("length", data_dir, 32).shape[0],) and np.isfinite(scores).all()
    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "sel"), curriculum=str(out), pacing="none",
                      select_fraction=0.25, seq_len=32, batch_size=8, max_steps=2, eval_interval=0)  # fmt: skip
    train(cfg, quiet=True)
    kept = CurriculumSampler(scores, "none", 2, 0.25)
    drawn = np.concatenate([kept.batch_windows(s, 64, 1) for s in range(4)])
    assert scores[drawn].max() <= np.sort(scores)[int(np.ceil(0.25 * len(scores))) - 1]
    bad = ("train", "--data", data_dir, "--out", tmp_path / "x", *TINY, "--max-steps", 1)
    assert_one_line_error(cli(*bad, "--curriculum", "length", "--pacing", "sideways", check=False), "pacing")
    assert_one_line_error(cli(*bad, "--select-fraction", 0.5, check=False), "needs --curriculum")
    np.save(tmp_path / "short.npy", scores[:5])
    assert_one_line_error(cli(*bad, "--curriculum", tmp_path / "short.npy", check=False), "score-windows")

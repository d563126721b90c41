"""The batch-size warm-up (GPT-BERT's batch_reduction): the global batch grows linearly from 1/F of the batch to
all of it, computed as train_10m.py computes it; words, tokens, the epoch cap and exact resume stay exact."""

import ast

import numpy as np
import pytest
from helpers import (
    SHARED,
    assert_one_line_error,
    assert_train_refused,
    hlm,
    logged,
    metric_rows,
    tiny_config,
    tiny_flags,
    torchrun,
)

TRAIN_10M = SHARED.parent / "reference" / "gpt-bert" / "pretraining" / "train_10m.py"


def _reference_batch_size():
    """The line of train_10m.py that sizes the global batch, taken from the file itself (ast) and evaluated as
    it stands there, with its names bound."""
    if not TRAIN_10M.is_file():
        pytest.skip(f"{TRAIN_10M} not found (the reference implementations live in ../shared/reference)")
    for node in ast.walk(ast.parse(TRAIN_10M.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "attr", "") == "current_global_batch_size" for t in
                                                node.targets):  # fmt: skip
            code = compile(ast.Expression(node.value), str(TRAIN_10M), "eval")
            break
    else:
        raise AssertionError("train_10m.py no longer sizes its batch in one assignment")

    def size(global_batch_size, batch_reduction, global_step, max_steps):
        from types import SimpleNamespace

        args = SimpleNamespace(batch_reduction=batch_reduction, max_steps=max_steps)
        return eval(code, {"int": int}, dict(args=args, global_batch_size=global_batch_size, global_step=global_step))

    return size


@pytest.mark.parametrize("batch, reduction, steps", [(32, 4, 50), (8, 4, 7), (96, 3, 1000), (16, 2.5, 33)])
def test_the_batch_at_every_step_is_train_10m_pys(batch, reduction, steps):
    reference = _reference_batch_size()
    cfg = tiny_config("", "", batch_size=batch, max_steps=steps, batch_warmup=reduction)
    assert [cfg.batch_rows(s) for s in range(steps)] == [reference(batch, reduction, s, steps) for s in range(steps)]
    assert tiny_config("", "", batch_size=batch, max_steps=steps).batch_rows(steps // 2) == batch  # 1: off


def test_tokens_words_and_data_follow_the_growing_batch(data_dir, tmp_path):
    from hybridlm.train import train

    cfg = tiny_config(data_dir, tmp_path / "r", objective="hybrid", max_steps=10, batch_warmup=4, log_interval=1,
                      eval_interval=0, checkpoint_interval=10)  # fmt: skip
    summary = train(cfg, quiet=True)
    rows = [cfg.batch_rows(s) for s in range(10)]
    assert rows[0] == 2 and rows[-1] < 8 and rows == sorted(rows)
    assert summary["tokens_seen"] == sum(rows) * 32
    tokens = [r["tokens"] for r in metric_rows(tmp_path / "r") if "loss" in r]
    assert np.diff([0, *tokens]).tolist() == [r * 32 for r in rows]


def test_the_epoch_cap_counts_the_growing_batch(data_dir, tmp_path):
    from hybridlm.data import PackedTokens
    from hybridlm.train import train

    windows = PackedTokens(data_dir, "train", 32).n_windows
    summary = train(tiny_config(data_dir, tmp_path / "r", max_epochs=0.05, batch_warmup=4, eval_interval=0,
                                log_interval=1), quiet=True)  # fmt: skip
    budget = 0.05 * windows * 32
    assert summary["tokens_seen"] <= budget < summary["tokens_seen"] + 8 * 32  # as many steps as fit
    assert summary["steps"] > budget / (8 * 32)  # more steps than a constant batch would take


@pytest.mark.slow
def test_lamb_ema_and_batch_warmup_resume_bit_identically_and_match_on_two_processes(tmp_path, data_dir):
    from helpers import train_until_killed

    args = ["--data", data_dir, *tiny_flags(objective="hybrid", max_steps=60, log_interval=1, eval_interval=20,
                                           eval_batches=2, checkpoint_interval=5, seed=3, optimizer="lamb", lr=1e-2,
                                           ema_decay=0.9, batch_warmup=4, precision="fp32")]  # fmt: skip
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    train_until_killed(args, killed, 10)
    hlm("train", "--out", killed, "--resume")
    hlm("train", *args, "--out", reference)
    for key in ("loss", "val_loss", "val_loss_ema", "tokens"):
        got, want = logged(killed, key), logged(reference, key)
        assert got and all(got[s] == want[s] for s in got), key
    torchrun(2, *args, "--out", tmp_path / "two")  # odd batches: the processes' shares differ by a row
    for key in ("loss", "val_loss_ema"):
        two, one = logged(tmp_path / "two", key), logged(reference, key)
        assert all(two[s] == pytest.approx(one[s], rel=1e-4) for s in one), key


@pytest.mark.parametrize(
    "flags, needle",
    [(["--batch-warmup", "0.5"], "batch_warmup"), (["--batch-warmup", "32"], "first step"),
     (["--batch-warmup", "2", "--curriculum", "length"], "curriculum")],
)  # fmt: skip
def test_bad_batch_warmups_are_one_line(cli, data_dir, tmp_path, flags, needle):
    assert_train_refused(cli, data_dir, tmp_path / "x", flags, needle)


def test_a_resume_keeps_the_batch_schedule(cli, data_dir, tmp_path):
    run = tmp_path / "r"
    cli("train", "--data", data_dir, "--out", run, *tiny_flags(max_steps=2, batch_warmup=2, eval_interval=0))
    assert_one_line_error(cli("train", "--out", run, "--resume", "--max-steps", 4, check=False), "--batch-warmup")

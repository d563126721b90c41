"""Multi-token prediction: extra heads predict t+2..t+N on causal rows; everything else reads the
next-token head, and exports drop the extra heads."""

import pytest
import torch
from helpers import assert_one_line_error, metric_rows, tiny_flags

from hybridlm.config import TrainConfig
from hybridlm.objectives import build_objective


def test_extra_targets_are_the_later_tokens_and_weighted_only_where_they_exist():
    obj = build_objective(TrainConfig(objective="causal", mtp_heads=3, mtp_weights=[0.5, 0.25]), 300)
    ids = torch.randint(5, 300, (4, 17), generator=torch.Generator().manual_seed(0))
    b = obj.corrupt(ids, torch.Generator())
    L = b.input_ids.shape[1]
    assert b.extra_targets.shape == (4, L, 2)
    for k in (2, 3):
        head = k - 2
        for i in range(L):
            if i + k <= L:
                assert (b.extra_targets[:, i, head] == ids[:, i + k]).all() and (b.extra_weights[:, i, head] > 0).all()
            else:
                assert (b.extra_weights[:, i, head] == 0).all()  # past the window: no target, no loss
    assert b.extra_weights[..., 0].sum().item() == pytest.approx(0.5) and b.extra_weights[
        ..., 1
    ].sum().item() == pytest.approx(0.25)
    assert torch.equal(b.targets, ids[:, 1:]) and b.loss_weights.sum().item() == pytest.approx(1.0)


def test_mtp_trains_reports_next_token_bpb_and_exports_without_the_heads(cli, data_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    from hybridlm.runs import load_run

    cli(
        "train",
        "--data",
        data_dir,
        "--out",
        tmp_path / "run",
        *tiny_flags(max_steps=6, log_interval=1, eval_interval=6, eval_batches=2, mtp_heads=3),
        "--mtp-weights",  # given twice: one weight a head
        0.5,
        "--mtp-weights",
        0.5,
    )
    rows = metric_rows(tmp_path / "run")
    assert all("ce_mtp2" in r and "ce_mtp3" in r for r in rows if "loss" in r)
    assert any("val_bpb" in r for r in rows)
    run = load_run(tmp_path / "run")
    assert len(run.model.mtp) == 2
    cli("export", "--run", tmp_path / "run", "--out", tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, run.model(ids, logits=True), atol=1e-4)
    cli(
        "train",
        "--data",
        data_dir,
        "--out",
        tmp_path / "mix",
        *tiny_flags(objective="mix", mix="causal:1,mntp:1", max_steps=2, log_interval=1, eval_interval=0, mtp_heads=2),
    )
    rows = metric_rows(tmp_path / "mix")
    assert all("ce_mtp2" in r for r in rows if "loss" in r)


def test_mtp_needs_causal_rows(cli, data_dir, tmp_path):
    for args, needle in (
        (["--objective", "masked", "--mtp-heads", 2], "option of causal"),
        (["--mtp-heads", 0], "mtp_heads"),
        (["--mtp-heads", 3, "--mtp-weights", 1], "one weight"),
        (["--mtp-heads", 2, "--mtp-weights", "x"], "one weight"),
    ):
        assert_one_line_error(cli("train", "--data", data_dir, "--out", tmp_path / "x", *args, check=False), needle)

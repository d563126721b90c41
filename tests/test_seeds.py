"""Seeds as an axis (issue: data-efficiency knobs): `hlm train --seeds` makes one run per seed side
by side, the initialisation and the data order have their own seeds, and `hlm report --group-by`
gives mean ± s.d. over seeds, marking differences the seeds do not support."""

import json

import torch
from helpers import assert_one_line_error, tiny_flags
from safetensors.torch import load_file

from hybridlm.config import TrainConfig
from hybridlm.report import _group_section, group_runs
from hybridlm.runs import RunDir
from hybridlm.train import Dist, prepare_batch, setup, train

TINY = tiny_flags(max_steps=4, eval_interval=4, eval_batches=2)


def _weights(run):
    return load_file(str(run / "checkpoints" / "step_0000004" / "model.safetensors"))


def test_seeds_make_one_run_each_and_the_report_groups_them(cli, data_dir, tmp_path):
    for objective in ("causal", "diffusion"):
        cli("train", "--data", data_dir, "--out", tmp_path / objective, "--objective", objective, *TINY,
            "--seeds", "1,2")  # fmt: skip
    runs = [tmp_path / o / f"seed_{s}" for o in ("causal", "diffusion") for s in (1, 2)]
    assert [json.loads((r / "config.json").read_text())["seed"] for r in runs[:2]] == [1, 2]
    a, b = _weights(runs[0]), _weights(runs[1])
    assert any(not torch.equal(a[k], b[k]) for k in a)  # other seeds, other runs
    # the report: one row per group, mean ± s.d. over its seeds, and the plot
    cli("report", *runs, "--out", tmp_path / "rep", "--group-by", "objective", "--no-samples")
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| objective=causal | 2 |" in text and "| objective=diffusion | 2 |" in text and "±" in text
    assert (tmp_path / "rep" / "seeds.png").read_bytes()[:4] == b"\x89PNG"
    assert_one_line_error(cli("report", *runs, "--out", tmp_path / "r2", "--group-by", "colour", check=False), "colour")
    # resume: every seed's run continues
    cli("train", "--out", tmp_path / "causal", "--seeds", "1,2", "--resume", "--max-steps", 5)
    assert all(json.loads((tmp_path / "causal" / f"seed_{s}" / "config.json").read_text())["max_steps"] == 5
               for s in (1, 2))  # fmt: skip
    assert_one_line_error(cli("train", "--data", data_dir, "--out", tmp_path / "x", "--seeds", "1,1", check=False),
                          "--seeds")  # fmt: skip


def test_the_data_order_has_its_own_seed(data_dir, tmp_path):
    batches, weights = {}, {}
    for seed, data_seed in ((1, 7), (2, 7), (1, 8)):
        out = tmp_path / f"{seed}-{data_seed}"
        train(TrainConfig(data=str(data_dir), out=str(out), seed=seed, data_seed=data_seed, seq_len=32, batch_size=8,
                          max_steps=4, eval_interval=0), quiet=True)  # fmt: skip
        run = RunDir(out)
        t = setup(run.read_config(), Dist("cpu"), run, resume=False)
        batches[seed, data_seed] = prepare_batch(t, 0).micro_batches[0].input_ids
        weights[seed, data_seed] = _weights(out)
    assert torch.equal(batches[1, 7], batches[2, 7])  # the same data order, other initialisations
    assert not torch.equal(batches[1, 7], batches[1, 8])  # another data order, the same initialisation
    w = weights[1, 7], weights[2, 7]
    assert any(not torch.equal(w[0][k], w[1][k]) for k in w[0])


def test_differences_within_two_seed_sd_are_marked():
    def run(objective, loss):
        return {"config": {"objective": objective, "seed": 0, "out": ""}, "metrics": [{"val_loss": loss}], "blimp": []}

    runs = [run("a", 1.0), run("a", 1.2), run("b", 1.15), run("b", 1.35), run("c", 3.0), run("c", 3.1)]
    lines = "\n".join(_group_section(group_runs(runs, "objective")))
    assert "| objective=a | 2 | 1.1 ± 0.14 (best)" in lines
    assert "| objective=b | 2 | ≈ 1.25 ± 0.14" in lines  # within two s.d. of the best: not a supported difference
    assert "| objective=c | 2 | 3.05 ± 0.071" in lines  # far outside
    assert list(group_runs(runs, "auto")) == ["objective=a", "objective=b", "objective=c"]

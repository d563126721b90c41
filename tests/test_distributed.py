"""torchrun with 2 CPU processes (gloo) trains exactly like 1 process with the same global batch."""

import pytest
from helpers import hlm, logged, tiny_flags, torchrun

pytestmark = pytest.mark.slow  # torchrun with two processes: make test runs it, make test-fast does not

ARGS = tiny_flags(objective="hybrid", log_interval=1, eval_interval=3, eval_batches=2, precision="fp32", seed=5,
                  causal_fraction=0.25)  # fmt: skip


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, data_dir, mode):
    torchrun(2, "--data", data_dir, "--out", tmp_path / "two", "--max-steps", 6, "--distributed", mode, *ARGS)
    hlm("train", "--data", data_dir, "--out", tmp_path / "one", "--max-steps", 6, *ARGS)
    two, one = logged(tmp_path / "two"), logged(tmp_path / "one")
    assert sorted(two) == sorted(one) == list(range(1, 7))
    for s in one:
        assert two[s] == pytest.approx(one[s], rel=1e-5), (s, two[s], one[s])
    g2, g1 = logged(tmp_path / "two", "grad_norm"), logged(tmp_path / "one", "grad_norm")
    assert all(g2[s] == pytest.approx(g1[s], rel=1e-4) for s in g1)  # the whole model's norm, not one shard's
    for key in ("val_loss", "val_ce_causal", "val_bpb"):  # validation through the wrapped model: the same numbers
        v2, v1 = logged(tmp_path / "two", key), logged(tmp_path / "one", key)
        assert sorted(v2) == sorted(v1) == [3, 6] and all(v2[s] == pytest.approx(v1[s], rel=1e-5) for s in v1), key


def test_resume_a_two_process_run_on_one_process(tmp_path, data_dir):
    torchrun(2, "--data", data_dir, "--out", tmp_path / "run", "--max-steps", 8, "--checkpoint-interval", 4, *ARGS)
    # drop the final checkpoint, as if the 2-process run had been killed after step 4
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_0000008")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step_0000004\n")
    hlm("train", "--out", tmp_path / "run", "--resume")
    hlm("train", "--data", data_dir, "--out", tmp_path / "ref", "--max-steps", 8, *ARGS)
    got, want = logged(tmp_path / "run"), logged(tmp_path / "ref")
    for s in range(5, 9):
        assert got[s] == pytest.approx(want[s], rel=1e-5), s

import pytest
from helpers import assert_one_line_error


@pytest.mark.slow
def test_demo_runs_all_four_objectives(cli, tmp_path):
    p = cli("demo", "--steps", 8, "--out", tmp_path)
    table = p.stdout.split("samples:")[0]
    for objective in ("causal", "masked", "hybrid", "diffusion"):
        assert f"\n{objective} " in table
    assert "pairs acc" in table and "NELBO" in table and "fine-tuned" in table and "grammatical" in table
    rows = {line.split()[0]: line for line in table.splitlines() if line.split()[:1] in (["causal"], ["masked"])}
    # every objective generates, a masked LM by <mask> tokens after the text: each has a grammatical rate
    assert rows["causal"].split()[-2].endswith("%") and rows["masked"].split()[-2].endswith("%")
    assert (tmp_path / "runs" / "hybrid" / "checkpoints" / "latest").is_file()


def test_demo_rejects_unknown_objective(cli):
    assert_one_line_error(cli("demo", "--objectives", "gpt", check=False), "unknown objective")

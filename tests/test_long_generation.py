"""Generation past the model's window: a left-to-right model slides it (issue 39, part 2, for causal runs)."""

import pytest
import torch
from helpers import assert_one_line_error
from test_samplers import SPECIALS

from hybridlm.generate import causal_rows
from hybridlm.model import build_model
from hybridlm.runs import load_run
from hybridlm.samplers import RowRandom


@pytest.mark.parametrize("prompt_as_prefix", [False, True])
def test_causal_sampling_slides_past_the_window(prompt_as_prefix):
    """Past max_seq_len the window slides (its last half re-read from position 0): a sample is as long as
    asked, its first window is the within-window sample at the same seed, and the cache equals none."""
    torch.manual_seed(0)
    model = build_model("tiny", 40, {"max_seq_len": 16}).eval()
    prompt = [SPECIALS[1], 9, 10]  # <s> and two tokens
    kw = dict(forbid_ids=SPECIALS, prompt_as_prefix=prompt_as_prefix)
    long, calls = causal_rows(model, prompt, 3, 50, generator=RowRandom.seeded(4, 3), **kw)
    short, _ = causal_rows(model, prompt, 3, 13, generator=RowRandom.seeded(4, 3), **kw)  # fills the window
    plain, _ = causal_rows(model, prompt, 3, 50, generator=RowRandom.seeded(4, 3), use_cache=False, **kw)
    assert [len(r) for r in long] == [50] * 3 and calls == 50
    assert [r[:13] for r in long] == short and long == plain


def test_eval_generation_goes_past_the_window_left_to_right_only(cli, runs, tmp_path):
    import shutil

    causal = shutil.copytree(runs["causal"], tmp_path / "causal")  # its eval/ gains a result
    limit = load_run(causal, "cpu").model.cfg.max_seq_len
    args = ("eval", "generation", "--length", limit + 8, "--num-samples", 1)
    assert cli(*args[:2], "--run", causal, *args[2:]).returncode == 0
    proc = cli(*args[:2], "--run", runs["diffusion"], *args[2:], check=False)
    assert_one_line_error(proc, "--length", "left-to-right")

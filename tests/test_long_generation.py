"""Generation past the model's window (issue 39, part 2): left to right and block by block the window slides."""

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


def test_the_commands_go_past_the_window_where_the_objective_can(cli, runs, tmp_path):
    import shutil

    causal = shutil.copytree(runs["causal"], tmp_path / "causal")  # its eval/ gains a result
    limit = load_run(causal, "cpu").model.cfg.max_seq_len
    args = ("eval", "generation", "--length", limit + 8, "--num-samples", 1)
    assert cli(*args[:2], "--run", causal, *args[2:]).returncode == 0
    proc = cli(*args[:2], "--run", runs["diffusion"], *args[2:], check=False)
    assert_one_line_error(proc, "--length", "left-to-right")
    # by blocks, diffusion goes past its context: 300 new tokens from a 256-token context
    from hybridlm.generate import generate_samples
    from hybridlm.samplers import Sampling

    diffusion = load_run(runs["diffusion"], "cpu")
    assert diffusion.model.cfg.max_seq_len < 300
    drawn = generate_samples(diffusion, "the", 300, Sampling(block_length=32), 2, seed=1)
    assert [len(ids) for ids in drawn.token_ids] == [300, 300]  # (no special token in a diffusion answer)
    assert cli("generate", "--run", runs["diffusion"], "--max-new-tokens", 300, "--block-length", 32).stdout


def _blocks_model():
    torch.manual_seed(1)
    with torch.no_grad():
        model = build_model("tiny", 40, {"max_seq_len": 16}).eval()
        model.embed.weight.mul_(4.0)  # peaked predictions that depend on the context
    return model


@pytest.mark.parametrize("objective", ["block_diffusion", "semi-autoregressive diffusion"])
def test_blocks_slide_past_the_window(objective):
    """Block diffusion and diffusion over --block-length write past max_seq_len: every position filled,
    the first window as the within-window sample at the same seed, and (block diffusion) the exact cache
    equal to none across slides."""
    from test_samplers import BOS, MASK

    from hybridlm.generate import unmask_rows
    from hybridlm.objectives import BlockDiffusionObjective, DiffusionObjective
    from hybridlm.samplers import Sampling

    model = _blocks_model()
    blocks = objective == "block_diffusion"
    obj = BlockDiffusionObjective(40, block_size=4) if blocks else DiffusionObjective(40)
    sampling = Sampling("confidence", steps=0, block_length=0 if blocks else 4)

    def sample(masks, use_cache=True):
        x = torch.tensor([[BOS, 9, 10] + [MASK] * masks] * 3)
        return unmask_rows(model, obj, x, MASK, sampling, RowRandom.seeded(6, 3), SPECIALS, 0, use_cache)[0]

    long, window = sample(45), sample(13)  # 48 positions against the 16 of the context
    assert long.shape == (3, 48) and not (long == MASK).any()
    inside = 16 if blocks else 15  # the blocks wholly inside the first window (diffusion's start after the prompt)
    assert torch.equal(long[:, :inside], window[:, :inside])
    if blocks:
        assert torch.equal(long, sample(45, use_cache=False))


def test_a_whole_canvas_past_the_window_is_refused():
    from test_samplers import BOS, MASK

    from hybridlm.errors import UserError
    from hybridlm.generate import unmask_rows
    from hybridlm.objectives import DiffusionObjective
    from hybridlm.samplers import Sampling

    x = torch.tensor([[BOS] + [MASK] * 30])
    with pytest.raises(UserError, match="--block-length"):
        unmask_rows(_blocks_model(), DiffusionObjective(40), x, MASK, Sampling(), RowRandom.seeded(0, 1), SPECIALS)


@pytest.mark.parametrize("objective", ["masked", "diffusion", "hybrid"])
def test_span_auto_prefers_no_length_for_being_longer(runs, objective):
    """A model with uniform predictions scores every gap length the same per token: the choice is a seeded
    draw, spread over the lengths, never the longest (or shortest) by construction."""
    from collections import Counter

    from hybridlm.generate import infill_auto

    run = load_run(runs[objective], "cpu")
    with torch.no_grad():
        for p in run.model.parameters():
            p.zero_()  # every logit 0: uniform
    picks = Counter()
    for seed in range(24):
        chosen = infill_auto(run, "the dog <mask> the cat .", (1, 4), seed=seed, temperature=0.0)
        scores = {round(score, 6) for _, score, _ in chosen.candidates}
        assert len(scores) == 1 and len(chosen.candidates) == 4  # one score for every length
        picks[chosen.length] += 1
    assert set(picks) == {1, 2, 3, 4} and max(picks.values()) <= 12, picks


def test_span_auto_from_the_cli_reports_each_length(cli, runs):
    r = cli("infill", "--run", runs["diffusion"], "--text", "the <mask> sat .", "--span", "auto:1,3")
    assert "<mask>" not in r.stdout and "gap length by score per token: 1:" in r.stderr and "(chosen)" in r.stderr
    for bad in ("auto:0,3", "auto:4,2", "auto:1", "many", "auto:x,2"):
        assert_one_line_error(cli("infill", "--run", runs["diffusion"], "--text", "a <mask> .", "--span", bad,
                                  check=False), "--span")  # fmt: skip
    two = cli("infill", "--run", runs["diffusion"], "--text", "a <mask> b <mask>", "--span", "auto", check=False)
    assert_one_line_error(two, "one gap")

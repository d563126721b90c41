"""Block diffusion (BD3-LM): its two limits (block_size 1: next-token prediction; block_size L:
diffusion), its attention, its bound as a scorer, and its runs."""

import json
import math

import pytest
import torch
from helpers import assert_one_line_error, tiny_config

from hybridlm.errors import UserError
from hybridlm.evaluate.lm import RunLM
from hybridlm.evaluate.scoring import score_sentences
from hybridlm.losses import loss_of
from hybridlm.model import AttentionSpec, build_model
from hybridlm.objectives import BlockDiffusionObjective, DiffusionObjective
from hybridlm.objectives.base import SPECIAL

V = 64
MASK = SPECIAL["mask"]


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("tiny", V).eval()


def _windows(rows=3, length=17, seed=0):
    return torch.randint(len(SPECIAL), V, (rows, length), generator=torch.Generator().manual_seed(seed))


def test_block_size_one_fully_masked_is_next_token_prediction():
    """Every block (one token) masked: each masked token reads the clean tokens before it, so the loss is
    the mean of -log p(x_i | x_<i) with a <mask> placeholder at i, here computed one prefix at a time."""
    model, ids = _model(), _windows()
    obj = BlockDiffusionObjective(V, block_size=1, document_mask=False)
    batch = obj.corrupt(ids, torch.Generator().manual_seed(0), t=torch.ones(len(ids)))
    assert (batch.input_ids[:, :16] == MASK).all()
    loss, _ = loss_of(model, obj, batch)
    x0 = ids[:, :-1]
    nll = []
    with torch.no_grad():
        for i in range(x0.shape[1]):
            seq = torch.cat([x0[:, :i], torch.full((len(x0), 1), MASK)], 1)  # the past, then the masked token
            logits = model(seq, True, logits=True)[:, -1].float()
            logits[:, MASK] = float("-inf")
            nll.append(torch.nn.functional.cross_entropy(logits, x0[:, i], reduction="none"))
    assert loss.item() == pytest.approx(torch.stack(nll).mean().item(), abs=1e-5)


def test_block_size_l_is_diffusion():
    model, ids = _model(), _windows()
    t = torch.tensor([0.2, 0.5, 0.9])
    block = BlockDiffusionObjective(V, block_size=16, document_mask=False)
    plain = DiffusionObjective(V, document_mask=False)
    b1 = block.corrupt(ids, torch.Generator().manual_seed(1), t=t)
    b2 = plain.corrupt(ids, torch.Generator().manual_seed(1), t=t)
    assert torch.equal(b1.input_ids[:, :16], b2.input_ids)
    l1, _ = loss_of(model, block, b1)
    l2, _ = loss_of(model, plain, b2)
    assert l1.item() == pytest.approx(l2.item(), abs=1e-5)
    # and without a given t: the same stratified times as diffusion's (one block per row)
    b1 = block.corrupt(ids, torch.Generator().manual_seed(2), train=False)
    b2 = plain.corrupt(ids, torch.Generator().manual_seed(2), train=False)
    assert torch.equal(b1.input_ids[:, :16], b2.input_ids)


def test_attention_noisy_block_sees_itself_and_clean_past_only():
    obj = BlockDiffusionObjective(V, block_size=2, document_mask=False)
    batch = obj.corrupt(_windows(1, 7), torch.Generator().manual_seed(0))
    mask, _ = batch.attention.mask(12, "cpu")
    m = mask[0, 0]
    # x_t at 0..5 (blocks 0,0,1,1,2,2), x_0 at 6..11
    assert m[2].tolist() == [False, False, True, True, False, False, True, True, False, False, False, False]
    assert m[8].tolist() == [False] * 6 + [True, True, True, True, False, False]
    assert not m[6:, :6].any()  # clean tokens never see noisy ones
    assert torch.equal(batch.attention.position_ids, torch.tensor([0, 1, 2, 3, 4, 5] * 2))


def test_changing_a_later_block_changes_nothing_before_it():
    model = _model()
    obj = BlockDiffusionObjective(V, block_size=4, document_mask=False)
    ids = _windows(1, 13)
    spec = lambda n: AttentionSpec(False, block_ids=obj.block_ids(n))  # noqa: E731
    with torch.no_grad():
        a = model(ids[:, :12], spec(12), logits=True)
        other = ids[:, :12].clone()
        other[0, 8:] = 7
        b = model(other, spec(12), logits=True)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6) and not torch.allclose(a[:, 8:], b[:, 8:])


def test_noise_clip_in_training_only():
    obj = BlockDiffusionObjective(V, block_size=4, noise_clip_min=0.3, noise_clip_max=0.8)
    t = obj.block_times(64, 8, torch.Generator().manual_seed(0), train=True)
    assert t.min() >= 0.3 and t.max() <= 0.8
    t = obj.block_times(64, 8, torch.Generator().manual_seed(0), train=False)
    assert t.min() < 0.05 and t.max() > 0.95
    with pytest.raises(UserError, match="noise_clip_max"):
        BlockDiffusionObjective(V, noise_clip_min=0.5, noise_clip_max=0.4)


def test_nelbo_of_uniform_model_is_log_vocab():
    from objectives.test_diffusion import Uniform

    obj = BlockDiffusionObjective(V, block_size=4, document_mask=False)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (256, 33), generator=g)
    losses = [loss_of(Uniform(V), obj, obj.corrupt(ids, g, train=False))[0].item() for _ in range(20)]
    assert sum(losses) / len(losses) == pytest.approx(math.log(V - 1), rel=0.03)


@pytest.fixture(scope="module")
def block_run(tmp_path_factory, data_dir):
    from hybridlm.train import train

    out = tmp_path_factory.mktemp("bd") / "run"
    cfg = tiny_config(data_dir, out, objective="block_diffusion", block_size=4, max_steps=30, eval_interval=30,
                      eval_batches=2, checkpoint_interval=30)  # fmt: skip
    summary = train(cfg, quiet=True)
    return out, summary


def test_run_reports_bits_per_byte_and_refuses_what_it_cannot(block_run, cli, tmp_path):
    out, summary = block_run
    assert math.isfinite(summary["val_bpb"]) and summary["val_loss"] > 0
    assert json.loads((out / "config.json").read_text())["block_size"] == 4
    assert_one_line_error(cli("export", "--run", out, "--out", tmp_path / "exp", check=False), "block_diffusion")
    mix = cli("train", "--data", out, "--out", tmp_path / "m", "--objective", "mix",
              "--mix", "causal:1,block_diffusion:1", check=False)  # fmt: skip
    assert_one_line_error(mix, "twice a window")
    assert not (tmp_path / "exp").exists() and not (tmp_path / "m").exists()


def test_block_bound_scorer_equals_the_loss_on_one_block(block_run):
    """With one sentence in one block, the scorer's bound is diffusion's by subset size; a pair of
    sentences is scored by the bound of every block given the clean blocks before it."""
    out, _ = block_run
    lm = RunLM(out)
    assert lm.scorers == ("block-elbo",)
    a, b = score_sentences(lm, ["the dog sees the cat .", "the dog see the cat ."], samples=4)
    assert a < 0 and b < 0 and a != b
    again = score_sentences(lm, ["the dog sees the cat ."], samples=4)[0]
    assert again == pytest.approx(a)  # seeded by length: the same draws


def test_generate_by_blocks_and_refuse_infilling(block_run, cli):
    out, _ = block_run
    r = cli("generate", "--run", out, "--prompt", "the", "--num-samples", 3, "--max-new-tokens", 10,
            "--sampler", "remdm", "--eta", 0.2, "--steps", 12)  # fmt: skip
    lines = r.stdout.strip().split("\n")  # (not splitlines: a byte-level sample may hold \x1e)
    assert len(lines) == 3 and all(line.startswith("the") for line in lines)
    assert "network calls each" in r.stderr
    assert_one_line_error(cli("infill", "--run", out, "--text", "the <mask> .", check=False), "cannot fill")
    assert_one_line_error(cli("generate", "--run", out, "--sampler", "confidence", "--eta", 0.5, check=False), "remdm")


def test_block_bound_of_a_completion_and_of_a_file(block_run, tmp_path, cli):
    from hybridlm.evaluate.perplexity import evaluate_file
    from hybridlm.evaluate.scoring import score_completions

    out, summary = block_run
    lm = RunLM(out)
    whole, completion = score_completions(lm, [("the dog sees the cat .", 0, 5), ("the dog sees the cat .", 8, 5)])
    assert whole < completion < 0  # the completion alone: fewer tokens bounded, the context given
    text = tmp_path / "valid.txt"
    text.write_text("the dog sees the cat .\nmany small boys sleep .\n")
    result = evaluate_file(lm, text, samples=2)["block-elbo"]
    assert result["measure"] == "upper bound (NELBO)" and math.isfinite(result["bits_per_byte"])
    assert_one_line_error(
        cli("train", "--data", out, "--out", tmp_path / "d", "--objective", "block_diffusion", "--distill-from", out,
            check=False), "distill")  # fmt: skip

"""hlm sft: prompt/response pairs through hlm train, the prompt never corrupted nor scored, the </s> policy, exact
resume, and the grammar task whose answers can be checked."""

import json

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, hlm, logged, train_until_killed

from hybridlm.grammar import plural_pairs, write_plural_pairs
from hybridlm.objectives import objective_class
from hybridlm.sft import GENERATING, Supervised, encode_pairs
from hybridlm.tokenizer import load_tokenizer

SEQ = 64  # tokens per pair with the tiny test tokenizer (the pairs take up to ~50)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_plural_pairs(tmp_path_factory.mktemp("pairs"), n_train=64, n_valid=16)


def _rows(tokenizer_dir, eos, n=16):
    tok = load_tokenizer(tokenizer_dir)
    rows, _ = encode_pairs([(p["prompt"], p["response"]) for p in plural_pairs(n)], tok, SEQ, eos)
    return torch.from_numpy(rows.astype(np.int64)), tok


@pytest.mark.parametrize("name", GENERATING)
@pytest.mark.parametrize("eos", ["pad", "stop"])
def test_the_prompt_is_never_corrupted_nor_scored(tokenizer_dir, name, eos):
    rows, tok = _rows(tokenizer_dir, eos)
    prompt, clean = rows < 0, torch.where(rows < 0, -rows - 1, rows)
    objective = Supervised(objective_class(name)(tok.get_vocab_size()))
    for seed in range(3):
        batch = objective.corrupt(rows, torch.Generator().manual_seed(seed), fraction_done=0.5)
        assert (batch.input_ids >= 0).all() and (batch.targets >= 0).all()  # ids restored for the model
        L = batch.input_ids.shape[1] if name != "block_diffusion" else batch.input_ids.shape[1] // 2
        # the targets each position predicts, and whether they are the prompt's
        shift = 1 if name in ("causal", "prefix", "mntp", "hybrid") else 0
        target_is_prompt = prompt[:, shift : shift + L]
        if name == "block_diffusion":
            target_is_prompt = target_is_prompt.repeat(1, 2)
        assert (batch.loss_weights[target_is_prompt] == 0).all() and not batch.token_mask[target_is_prompt].any()
        assert batch.loss_weights.sum() > 0  # the response is learned
        # the prompt reaches the model as it is (never <mask>, never a random token)
        inputs = batch.input_ids[:, :L]
        assert torch.equal(inputs[prompt[:, :L]], clean[:, :L][prompt[:, :L]]), name
        if name in ("diffusion", "block_diffusion", "masked", "mntp", "hybrid"):  # the response is what gets masked
            assert (inputs == tok.token_to_id("<mask>")).any()
        if name in ("causal", "prefix", "hybrid"):  # a mean over the response's tokens (a hybrid: each part's)
            assert batch.loss_weights.sum().item() == pytest.approx(1.0)
        if name == "hybrid":  # its causal rows score every response token; its MNTP rows only what they mask
            plain = objective.inner.corrupt(rows, torch.Generator().manual_seed(seed), fraction_done=0.5)
            causal_rows = (plain.loss_weights > 0).sum(1) > (plain.input_ids == tok.token_to_id("<mask>")).sum(1)
            assert 0 < causal_rows.sum() < len(rows)
            share = batch.loss_weights[causal_rows].sum() / batch.loss_weights.sum()
            assert share.item() == pytest.approx(plain.loss_weights[causal_rows].sum().item(), rel=1e-5)
        if name == "prefix":  # the prompt is the prefix, read both ways
            assert torch.equal(batch.attention.prefix_lengths, prompt[:, :-1].sum(1))


def test_the_end_of_text_policy(tokenizer_dir):
    """pad: the canvas after the answer is </s>, each a target; stop: one </s>, then <pad>, never scored."""
    end, pad = 2, 0
    for eos in ("pad", "stop"):
        rows, tok = _rows(tokenizer_dir, eos)
        causal = Supervised(objective_class("causal")(tok.get_vocab_size())).corrupt(rows, torch.Generator())
        diffusion = Supervised(objective_class("diffusion")(tok.get_vocab_size()))
        for r in range(len(rows)):
            row = rows[r].tolist()
            first_end = row.index(end)
            after = row[first_end + 1 :]
            assert after and all(t == (end if eos == "pad" else pad) for t in after)
            scored_ends = (causal.targets[r] == end) & (causal.loss_weights[r] > 0)
            assert int(scored_ends.sum()) == (1 + len(after) if eos == "pad" else 1)
        masked = diffusion.corrupt(rows, torch.Generator().manual_seed(0), fraction_done=1.0)
        fill = torch.tensor([[t == pad for t in row.tolist()] for row in rows])
        assert not (masked.input_ids[fill[:, :-1]] == tok.token_to_id("<mask>")).any()  # <pad> is never masked
        if eos == "pad":  # the </s> that fill the canvas are masked and predicted (LLaDA)
            ends = rows[:, :-1] == end
            assert (masked.input_ids[ends] == tok.token_to_id("<mask>")).any()


def test_sft_trains_from_a_run_and_resumes_exactly(runs, pairs, tmp_path):
    """hlm sft on a diffusion run: its objective and shape, a new run holding its rows; SIGKILL + --resume gives
    the same losses and weights as a run never stopped."""
    from safetensors.torch import load_file

    train_file, valid_file = pairs
    args = ["--run", runs["diffusion"], "--data", train_file, "--valid", valid_file, "--seq-len", SEQ, "--max-steps",
            12, "--batch-size", 8, "--checkpoint-interval", 4, "--eval-interval", 6, "--eval-batches", 1,
            "--log-interval", 1, "--precision", "fp32", "--lr", 3e-3]  # fmt: skip
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    train_until_killed(args, killed, 4, command="sft")
    hlm("sft", "--out", killed, "--resume")
    hlm("sft", *args, "--out", reference)
    assert json.loads((reference / "config.json").read_text())["objective"] == "diffusion"
    for key in ("loss", "val_loss"):
        got, want = logged(killed, key), logged(reference, key)
        assert got and got == want, key
    a, b = (load_file(str(r / "checkpoints" / "step_0000012" / "model.safetensors")) for r in (killed, reference))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_sft_input_is_one_line(cli, runs, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n')
    assert_one_line_error(cli("sft", "--run", runs["causal"], "--data", bad, "--out", tmp_path / "o", check=False),
                          "bad.jsonl:1", "response")  # fmt: skip
    assert not (tmp_path / "o").exists()
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "the cat " * 40, "response": " runs ."}) + "\n" + '{"prompt": "a", '
                    '"response": " b"}\n')  # fmt: skip
    assert_one_line_error(cli("sft", "--run", runs["causal"], "--data", long, "--out", tmp_path / "o", check=False),
                          "--seq-len")  # fmt: skip
    assert_one_line_error(cli("sft", "--out", tmp_path / "o", "--resume", "--data", long, check=False),
                          "drop --data")  # fmt: skip


def test_a_hybrid_run_fine_tunes_and_answers(cli, runs, pairs, tmp_path):
    """GPT-BERT's hybrid: hlm sft keeps the objective (its causal and MNTP rows) and the tuned run generates."""
    from hybridlm.runs import load_run
    from hybridlm.sft import exact_match

    cli("sft", "--run", runs["hybrid"], "--data", pairs[0], "--seq-len", SEQ, "--max-steps", 2, "--batch-size", 4,
        "--out", tmp_path / "sft")  # fmt: skip
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["objective"] == "hybrid"
    losses = logged(tmp_path / "sft", "loss")
    assert losses and all(np.isfinite(list(losses.values())))
    rows = [(p["prompt"], p["response"]) for p in plural_pairs(2)]
    result = exact_match(load_run(tmp_path / "sft"), rows, max_new_tokens=4)
    assert result["n"] == 2 and all(isinstance(e["got"], str) for e in result["examples"])

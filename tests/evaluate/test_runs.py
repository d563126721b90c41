"""Scoring, perplexity, generation and export on trained hybridlm runs."""

import json
import math

import pytest
import torch
from helpers import assert_one_line_error

from hybridlm.errors import UserError
from hybridlm.evaluate.lm import RunLM
from hybridlm.evaluate.perplexity import evaluate_file
from hybridlm.evaluate.scoring import score_sentences
from hybridlm.generate import generate_causal, generate_text, infill_text
from hybridlm.grammar import write_minimal_pairs
from hybridlm.model import AttentionSpec
from hybridlm.runs import load_run

transformers = pytest.importorskip("transformers")


def test_causal_perplexity_is_exact(runs, corpus, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(corpus.read_text().splitlines()[:6]) + "\n")
    lm = RunLM(runs["causal"])
    r = evaluate_file(lm, text, seq_len=32)["causal"]
    # direct computation over the same windows
    from hybridlm.evaluate.perplexity import _tokens, _windows

    tokens, _, n_bytes, _ = _tokens(lm, text, 0)
    nll, n = 0.0, 0
    for w in _windows(tokens, 32):
        ids = torch.tensor([w])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(ids, logits=True).double(), -1)
        nll -= logp[0, :-1].gather(-1, ids[0, 1:, None]).sum().item()
        n += len(w) - 1
    assert r["tokens"] == n and r["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert r["bits_per_byte"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-6)


def test_every_objective_has_a_perplexity(runs, corpus, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(corpus.read_text()[:1500])
    got = {obj: evaluate_file(RunLM(runs[obj]), text, seq_len=32, samples=4) for obj in runs}
    assert set(got["hybrid"]) >= {"causal", "mntp"} and "pll" in got["masked"] and "elbo" in got["diffusion"]
    elbo = got["diffusion"]["elbo"]
    assert elbo["nll_per_token_stderr"] > 0 and math.isfinite(elbo["bits_per_byte"])
    again = evaluate_file(RunLM(runs["diffusion"]), text, seq_len=32, samples=4)["elbo"]
    assert again["nll_per_token"] == elbo["nll_per_token"]  # fixed seed: reproducible
    for obj, r in got.items():
        for kind in ("causal", "pll", "mntp", "elbo"):
            if kind in r:
                assert 1 < r[kind]["perplexity"] < 320 * 1.5, (obj, kind, r[kind])


def test_export_matches_transformers_logits_and_scores(cli, runs, tmp_path):
    for objective in ("causal", "hybrid"):
        out = tmp_path / objective
        cli("export", "--run", runs[objective], "--out", out)
        hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        ours = load_run(runs[objective]).model
        ids = torch.randint(5, 320, (2, 20))
        with torch.no_grad():
            assert torch.allclose(hf(ids).logits, ours(ids, True, logits=True), atol=1e-4)
    sentences = ["the cat sleeps .", "the cats sleeps ."]
    via_run = score_sentences(RunLM(runs["causal"]), sentences, "causal")
    from hybridlm.evaluate.lm import HFLM

    via_hf = score_sentences(HFLM(tmp_path / "causal"), sentences, "causal")
    assert via_run == pytest.approx(via_hf, abs=1e-4)


def test_blimp_cli_same_pairs_through_run_and_hf(cli, runs, tmp_path):
    pairs = write_minimal_pairs(tmp_path / "pairs", n_per_paradigm=5)
    cli("export", "--run", runs["causal"], "--out", tmp_path / "hf")
    cli("eval", "blimp", "--run", runs["causal"], "--data", pairs, "--json", tmp_path / "a.json", "--keep-pairs")
    cli("eval", "blimp", "--hf-model", tmp_path / "hf", "--data", pairs, "--json", tmp_path / "b.json", "--keep-pairs")
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert set(a) >= {"macro_accuracy", "paradigms", "fields", "scorer", "model"} and len(a["paradigms"]) == 6
    assert a["macro_accuracy"] == b["macro_accuracy"]
    for x, y in zip(a["pairs"], b["pairs"]):
        assert x["good"] == pytest.approx(y["good"], abs=1e-4) and x["bad"] == pytest.approx(y["bad"], abs=1e-4)
    for obj in ("masked", "hybrid", "diffusion"):
        cli("eval", "blimp", "--run", runs[obj], "--data", pairs, "--limit", 2)
    assert_one_line_error(
        cli("eval", "blimp", "--run", runs["masked"], "--data", pairs, "--scorer", "causal", check=False),
        "supports pll",
    )


def test_kv_cache_generation_equals_full_recompute(runs):
    run = load_run(runs["causal"])
    a = generate_causal(run.model, [1, 10, 11], 12, temperature=0, use_cache=True)
    b = generate_causal(run.model, [1, 10, 11], 12, temperature=0, use_cache=False)
    assert a == b and len(a) > 0


def test_generation_and_infill_per_objective(cli, runs):
    for obj in ("causal", "hybrid", "diffusion", "masked"):  # a masked LM by <mask> tokens after the text
        assert isinstance(generate_text(load_run(runs[obj]), "the cat", max_new_tokens=8, steps=4, seed=1), str)
    for obj in ("masked", "hybrid", "diffusion"):
        out = infill_text(load_run(runs[obj]), "the <mask> sat on the <mask> .", span=2 if obj == "diffusion" else 1)
        assert "<mask>" not in out and out.startswith("the")
    with pytest.raises(UserError, match="cannot fill"):
        infill_text(load_run(runs["causal"]), "the <mask> .")
    p = cli(
        "generate",
        "--run",
        runs["causal"],
        "--prompt",
        "the",
        "--max-new-tokens",
        5,
        "--top-k",
        5,
        "--top-p",
        0.9,
        "--min-p",
        0.05,
    )
    assert p.stdout.startswith("the")
    p = cli("infill", "--run", runs["diffusion"], "--text", "the <mask> sleeps .", "--span", 3)
    assert "<mask>" not in p.stdout


def test_sampling_filters():
    from hybridlm.generate import filter_logits

    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert (filter_logits(logits, top_k=2)[0, 2:] == 0).all()
    p = filter_logits(logits, top_p=0.5)
    assert p[0, 0] == 1.0
    assert (filter_logits(logits, min_p=0.3)[0] > 0).tolist() == [True, True, False, False]
    assert filter_logits(logits, temperature=0)[0].tolist() == [1, 0, 0, 0]
    assert filter_logits(logits).dtype == torch.float64


def test_word_starts_and_within_word_perplexity(runs, corpus, tmp_path):
    lm = RunLM(runs["masked"])
    ids, starts = lm.tokenize("the unbelievably quick fox , jumping .")
    words = lm.tok.encode("the unbelievably quick fox , jumping .", add_special_tokens=False).word_ids
    assert starts == [words[i] != words[i - 1] if i else True for i in range(len(ids))]  # the tokenizer's words
    assert len(ids) > 7 and not all(starts)  # "unbelievably" is more than one token here
    text = tmp_path / "t.txt"
    text.write_text(corpus.read_text()[:600])
    plain = evaluate_file(lm, text, "pll", seq_len=32)["pll"]
    word = evaluate_file(lm, text, "pll-word", seq_len=32)["pll-word"]
    assert plain["tokens"] == word["tokens"]
    assert word["nll_per_token"] != plain["nll_per_token"]  # words of several tokens: the variants differ


def test_bf16_scoring_keeps_fp32_log_probs(runs):
    # --precision bf16: the body in bf16, the head and log-probs in fp32, so scores stay within a
    # small tolerance of fp32 and are not quantised to bf16's 8 bits (which would make ties)
    sentences = ["the dog sees the cat .", "the dogs see a cat .", "a cat sleeps ."]
    fp32 = score_sentences(RunLM(runs["causal"]), sentences, "causal")
    bf16 = score_sentences(RunLM(runs["causal"], precision="bf16"), sentences, "causal")
    assert fp32 != bf16  # the body did run in bf16
    for a, b in zip(fp32, bf16):
        assert b == pytest.approx(a, abs=0.05)
    lm = RunLM(runs["causal"], precision="bf16")
    ids = torch.tensor([[lm.bos_id] + lm.tokenize(sentences[0])[0]])
    every = torch.ones_like(ids, dtype=torch.bool)
    logits = lm.selected_logits(ids, torch.tensor([ids.shape[1]]), AttentionSpec(True), every)
    assert logits.dtype == torch.float32 and (logits != logits.bfloat16().float()).any()  # fp32 head, not bf16 logits

"""hlm eval generation: the grammar's exact check, the measures, the judge, and what lands in RUN/eval."""

import json
import math
import shutil

import pytest
from helpers import assert_one_line_error

from hybridlm.evaluate.generation import distinct_n, generative_perplexity, unigram_entropy
from hybridlm.evaluate.lm import RunLM
from hybridlm.evaluate.scoring import score_sentences
from hybridlm.grammar import Grammar, is_grammatical, sentences_of


def test_the_grammar_recognises_every_sentence_it_generates_and_no_broken_one():
    g = Grammar(11)
    assert all(is_grammatical(g.sentence()) for _ in range(3000))
    for bad in (
        "the boys sleeps .",  # subject-verb agreement
        "the dog near the cats run .",  # across a prepositional phrase
        "the girl that the boys sees runs .",  # inside a relative clause
        "these dog runs .",  # determiner-noun agreement
        "a old man sleeps .",  # a / an
        "the girl sees himself .",  # reflexive gender
        "the boy sleeps the ball .",  # an intransitive verb with an object
        "the ball sees the dog .",  # things are not subjects
        "the dog sees .",  # a transitive verb without one
        "the dog runs",  # no full stop
        "dog the runs .",
    ):
        assert not is_grammatical(bad), bad
    assert is_grammatical("The big dogs near a tree watched the children in the morning .")
    assert sentences_of("the cat runs . the dogs sleep . the") == (["the cat runs .", "the dogs sleep ."], "the")


def test_entropy_and_distinct_n_by_hand():
    assert unigram_entropy([5, 5, 5, 5]) == 0.0
    assert unigram_entropy([1, 2, 3, 4]) == pytest.approx(math.log(4))
    assert distinct_n([[1, 2, 1, 2], [1, 2]], 2) == pytest.approx(2 / 4)  # (1,2) (2,1) (1,2) | (1,2)
    assert distinct_n([[1]], 2) is None


def test_generative_perplexity_is_token_weighted_under_the_judge(runs):
    judge = RunLM(runs["causal"])
    texts = ["the cat sees a dog .", "many small dogs sleep again . the boys run ."]
    result = generative_perplexity(judge, texts)
    logp = score_sentences(judge, texts, "causal")
    tokens = sum(len(judge.tokenize(t)[0]) for t in texts)
    assert result["judge_tokens"] == tokens
    assert result["gen_ppl"] == pytest.approx(math.exp(-sum(logp) / tokens))
    assert result["nll_per_token_stderr"] > 0


@pytest.fixture
def own_runs(runs, tmp_path):
    """Copies of the session's runs (evaluations are written into them)."""
    return {k: shutil.copytree(v, tmp_path / k) for k, v in runs.items()}


def test_eval_generation_writes_a_result_the_report_plots(cli, own_runs, tmp_path):
    diffusion, causal = own_runs["diffusion"], own_runs["causal"]
    for sampler, steps in (("first-hitting", None), ("ancestral", 8), ("ancestral", 16)):
        flags = ["--steps", steps] if steps else []
        r = cli("eval", "generation", "--run", diffusion, "--judge", causal, "--num-samples", 6, "--length", 12,
                "--grammar", "--sampler", sampler, *flags)  # fmt: skip
        assert "gen. perplexity" in r.stdout and "grammatical" in r.stdout
    result = json.loads((diffusion / "eval" / "generation-first-hitting-steps32.json").read_text())
    assert result["kind"] == "generation" and result["num_samples"] == 6 and len(result["samples"]) == 6
    assert result["nfe"] == 12 and result["steps"] is None  # one call per token
    assert math.isfinite(result["gen_ppl"]) and 0 <= result["grammatical"] <= 1 and result["degenerate"] is not None
    assert (diffusion / "eval" / "generation-ancestral-steps16.json").is_file()
    cli("eval", "generation", "--run", causal, "--num-samples", 4, "--length", 10)
    auto = json.loads((causal / "eval" / "generation-autoregressive-temp1.json").read_text())
    assert auto["sampler"] == "autoregressive" and auto["nfe"] <= 10 and "gen_ppl" not in auto
    cli("report", diffusion, causal, "--out", tmp_path / "rep", "--no-samples")
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "samplers.png" in report and "| first-hitting |" in report
    assert (tmp_path / "rep" / "samplers.png").stat().st_size > 1000


def test_eval_generation_of_a_file_and_its_refusals(cli, own_runs, tmp_path):
    causal = own_runs["causal"]
    texts = tmp_path / "samples.jsonl"
    texts.write_text('{"text": "the cat runs ."}\n{"text": "the dogs runs ."}\n')
    cli("eval", "generation", "--run", causal, "--samples", texts, "--judge", causal, "--grammar")
    result = json.loads((causal / "eval" / "generation-file.json").read_text())
    assert result["from_file"] and result["grammatical"] == 0.5 and result["nfe"] is None
    masked_judge = cli("eval", "generation", "--run", causal, "--judge", own_runs["masked"], check=False)
    assert_one_line_error(masked_judge, "judge", "causal")
    # a masked LM generates too: <mask> tokens after the text, the first one revealed each call
    masked = cli("eval", "generation", "--run", own_runs["masked"], "--num-samples", 2, "--length", 8).stdout
    assert masked.startswith("masked-first (2 samples of 8 tokens)") and "calls/sample 8.0" in masked
    # past the context: only a left-to-right run slides its window (tests/test_long_generation.py)
    assert_one_line_error(cli("eval", "generation", "--run", causal, "--length", 0, check=False), "--length")
    assert_one_line_error(
        cli("eval", "generation", "--run", causal, "--samples", tmp_path / "no", check=False), "--samples"
    )

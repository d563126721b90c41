"""Masked LMs generate (issue 39): <mask> tokens after the text, the first or the most confident revealed each call."""

import json

import pytest
import torch
from helpers import tiny_config
from test_samplers import BOS, MASK, Recorder

from hybridlm.generate import masked_rows
from hybridlm.objectives import Generation, objective_class
from hybridlm.samplers import RowRandom, Sampling


class Certain(torch.nn.Module):
    """A masked model sure of one continuation: where the first <mask> is read (at it, or shift positions
    before it), all its mass on the continuation's next token; elsewhere nothing (uniform logits)."""

    def __init__(self, continuation, prompt_length, shift, limit=64, vocab=40):
        super().__init__()
        self.cfg = type("Cfg", (), {"max_seq_len": limit})()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.continuation, self.prompt_length, self.shift, self.vocab = continuation, prompt_length, shift, vocab

    def forward(self, ids, attention, logits=True):
        out = torch.zeros(*ids.shape, self.vocab)
        for r, row in enumerate(ids):
            text = int((row != MASK).sum())  # the text comes first, then the masks
            out[r, text - self.shift, self.continuation[text - self.prompt_length]] = 60.0
        return out


@pytest.mark.parametrize("shift", [0, 1])  # masked LM: read at the <mask>; MNTP: at the position before it
def test_a_certain_masked_model_generates_its_continuation_exactly(shift):
    continuation = [7, 19, 23, 11, 30, 8, 8, 15]
    model = Certain(continuation, prompt_length=3, shift=shift)
    new, calls = masked_rows(model, [BOS, 5, 6], MASK, 4, len(continuation), shift, generator=RowRandom.seeded(0, 4))
    assert new == [continuation] * 4 and calls == len(continuation)


def test_the_masked_objectives_say_they_generate_and_a_mix_prefers_left_to_right():
    assert objective_class("masked").capabilities.generation is Generation.MASKS
    assert objective_class("mntp").capabilities.generation is Generation.MASKS
    assert objective_class("hybrid").capabilities.generation is Generation.CAUSAL


def test_masked_and_mntp_runs_answer_generate_until(runs, data_dir, tmp_path, cli):
    """The harness's generate_until on a masked run and an MNTP run (a local task file); hlm generate too."""
    pytest.importorskip("lm_eval")
    from hybridlm.evaluate.harness import run_harness
    from hybridlm.train import train

    mntp = tmp_path / "mntp"
    train(tiny_config(data_dir, mntp, objective="mntp", max_steps=10, eval_interval=0), quiet=True)
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"prompt": "the cat", "answer": " runs"}\n{"prompt": "two dogs", "answer": " sleep"}\n')
    (tmp_path / "t_gen.yaml").write_text(json.dumps({
        "task": "t_gen", "dataset_path": "json", "test_split": "test", "output_type": "generate_until",
        "dataset_kwargs": {"data_files": {"test": str(docs)}}, "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}", "generation_kwargs": {"until": ["."], "max_gen_toks": 5, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}],
    }))  # fmt: skip
    for run in (runs["masked"], mntp):
        result = run_harness(run=str(run), tasks="t_gen", include_path=tmp_path, log_samples=True)
        answers = [s["resps"][0] for s in result["samples"]["t_gen"]]
        assert len(answers) == 2 and all(isinstance(a, str) for a in answers), answers  # (refused before)
        out = cli("generate", "--run", run, "--prompt", "the", "--max-new-tokens", 6, "--num-samples", 2)
        assert len(out.stdout.strip().split("\n")) == 2 and "6.0 network calls each" in out.stderr


class Sure(torch.nn.Module):
    """A masked model that knows the continuation at every position: the token at position j is predicted
    where j is read (j - shift), more surely the later j is, so a most-confident order reveals right to left."""

    def __init__(self, text, shift, limit=64, vocab=40):
        super().__init__()
        self.cfg = type("Cfg", (), {"max_seq_len": limit})()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.text, self.shift, self.vocab, self.seen = text, shift, vocab, []

    def forward(self, ids, attention, logits=True):
        self.seen.append(ids.clone())
        out = torch.zeros(*ids.shape, self.vocab)
        for j in range(self.shift, min(ids.shape[1], len(self.text)) + self.shift):
            if j - self.shift < ids.shape[1] and j < len(self.text):
                out[:, j - self.shift, self.text[j]] = 10.0 + j
        return out


@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("sampler", ["first", "confidence"])
def test_the_window_is_revealed_first_or_most_confident_first(shift, sampler):
    text = [BOS, 5, 6, 7, 19, 23, 11, 30, 8, 8, 15]
    model = Sure(text, shift)
    new, calls = masked_rows(model, text[:3], MASK, 2, 8, shift, Sampling(sampler), RowRandom.seeded(0, 2))
    assert new == [text[3:]] * 2 and calls == 8  # the same text either way
    first_reveal = model.seen[1][0, 3:7]  # the window after one call: which of its four masks became text
    revealed = (first_reveal != MASK).nonzero().flatten().tolist()
    assert revealed == ([0] if sampler == "first" else [3])  # the most confident: the last of the window


def _positionwise_model(vocab=40, seed=0):
    """A real model whose attention adds nothing: its predictions at a position depend on that token alone, so
    stale keys and values cannot matter and a cache must give exactly what no cache gives."""
    from test_samplers import _peaked_model

    model = _peaked_model(vocab, seed)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.proj.weight.zero_()
    return model


@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("sampler", ["first", "confidence"])
def test_masked_generation_with_a_cache_equals_it_without_token_for_token(shift, sampler):
    from test_samplers import _peaked_model

    prompt = [BOS, 9, 10, 11]
    for model, refresh in ((_positionwise_model(), None), (_positionwise_model(), 3), (_peaked_model(40, 1), 1)):
        plain, calls = masked_rows(model, prompt, MASK, 3, 20, shift, Sampling(sampler), RowRandom.seeded(5, 3))
        cached = Sampling(sampler, cache="prefix", cache_refresh=refresh)
        fast, fast_calls = masked_rows(model, prompt, MASK, 3, 20, shift, cached, RowRandom.seeded(5, 3))
        assert fast == plain and fast_calls == calls == 20
    # with attention the cache is an approximation: between refreshes it forwards only the window
    model = Recorder(_peaked_model(40, 1))
    masked_rows(model, prompt, MASK, 1, 20, shift, Sampling(sampler, cache="prefix"), RowRandom.seeded(5, 1))
    widths = [seen.shape[1] for seen in model.seen]  # call k's canvas is the prompt, k tokens and four masks
    assert [k for k, w in enumerate(widths) if w == len(prompt) + k + 4] == [0, 4, 8, 12, 16]  # refreshes
    between = [(k, w) for k, w in enumerate(widths) if k % 4]  # from the refresh's first <mask> on
    assert all(w < len(prompt) + k + 4 for k, w in between)
    assert sampler != "first" or all(w == 4 + k % 4 + shift for k, w in between)


def test_a_masked_sample_past_the_window_is_as_long_as_asked_and_begins_as_the_short_one():
    from test_samplers import _peaked_model

    model = _peaked_model(40, 2)
    model.cfg.max_seq_len = 16
    prompt = [BOS, 9, 10]
    for shift in (0, 1):
        long, _ = masked_rows(model, prompt, MASK, 2, 40, shift, generator=RowRandom.seeded(1, 2))
        short, _ = masked_rows(model, prompt, MASK, 2, 10, shift, generator=RowRandom.seeded(1, 2))
        assert [len(r) for r in long] == [40, 40] and [r[:10] for r in long] == short
        ranked, _ = masked_rows(model, prompt, MASK, 2, 40, shift, Sampling("confidence"), RowRandom.seeded(1, 2))
        assert [len(r) for r in ranked] == [40, 40]  # no <mask> is left behind as the window slides


def test_the_hybrid_generates_by_either_view_and_a_view_a_run_lacks_is_one_line(runs):
    from hybridlm.errors import UserError
    from hybridlm.generate import generate_samples
    from hybridlm.runs import load_run

    assert objective_class("hybrid").capabilities.generations == (Generation.CAUSAL, Generation.MASKS)
    hybrid = load_run(runs["hybrid"])
    by_view = {}
    for view in ("causal", "masked"):
        drawn = generate_samples(hybrid, "the", 8, Sampling(view=view, min_new_tokens=8), 3, seed=2)
        assert all(len(ids) == 8 for ids in drawn.token_ids) and drawn.nfe == [8, 8, 8]
        by_view[view] = drawn.token_ids
    assert by_view["causal"] != by_view["masked"]
    assert generate_samples(hybrid, "the", 8, Sampling(min_new_tokens=8), 3, seed=2).token_ids == by_view["causal"]
    for run, view in ((runs["causal"], "masked"), (runs["hybrid"], "unmask"), (runs["masked"], "causal")):
        with pytest.raises(UserError, match=f"does not generate by --view {view}"):
            generate_samples(load_run(run), "the", 4, Sampling(view=view))
    with pytest.raises(UserError, match="first | confidence | margin | entropy"):
        generate_samples(load_run(runs["masked"]), "the", 4, Sampling("ancestral"))

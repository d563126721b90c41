"""Masked LMs generate (issue 39, part 1 in part): <mask> tokens after the text, the first one read each call."""

import json

import pytest
import torch
from helpers import tiny_config
from test_samplers import BOS, MASK

from hybridlm.generate import masked_rows
from hybridlm.objectives import Generation, objective_class
from hybridlm.samplers import RowRandom


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

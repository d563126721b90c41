"""A fifth objective defined here, outside the package: it trains, validates, scores pairs and
reports with no edit anywhere in hybridlm, because every part of the package asks the objective."""

import pytest
import torch

from hybridlm.config import TrainConfig
from hybridlm.evaluate.blimp import evaluate_pairs, load_pairs
from hybridlm.evaluate.lm import RunLM
from hybridlm.grammar import write_minimal_pairs
from hybridlm.objectives import OBJECTIVES, Batch, Objective, register
from hybridlm.report import make_report
from hybridlm.train import train


class PreviousTokenObjective(Objective):
    """Predict the previous token: next-token prediction on the reversed window."""

    name = "previous"
    attention = "causal"
    likelihood = "exact"
    loss_label = "previous-token CE"
    scorers = ("causal",)
    perplexity_scorers = ("causal",)
    generation = None
    infill_shift = None
    export_causal_lm = False

    def corrupt(self, ids, generator, progress=1.0, train=True):
        reverse = ids.flip(1)
        inputs, targets = reverse[:, :-1], reverse[:, 1:]
        valid = targets != 0
        w = valid.float()
        docs = self._doc_ids(ids[:, 1:])
        return Batch(input_ids=inputs, targets=targets, loss_weights=w / w.sum().clamp(min=1),
                     is_causal=torch.ones(len(ids), dtype=torch.bool), token_mask=valid,
                     document_ids=None if docs is None else docs.flip(1))


@pytest.fixture
def registered():
    register(PreviousTokenObjective)
    yield
    OBJECTIVES.pop("previous")


def test_a_fifth_objective_needs_no_edit_in_the_package(registered, tmp_path, data_dir):
    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "prev"), objective="previous", preset="tiny", seq_len=32,
                      batch_size=8, max_steps=30, lr=1e-2, eval_interval=15, eval_batches=4, log_interval=5)
    summary = train(cfg, quiet=True)
    assert summary["objective"] == "previous" and summary["val_bpb"] > 0  # a likelihood: bits per byte reported
    metrics = [ln for ln in (tmp_path / "prev" / "metrics.jsonl").read_text().splitlines() if "val_loss" in ln]
    assert len(metrics) == 2

    pairs = load_pairs([write_minimal_pairs(tmp_path / "pairs", n_per_paradigm=4)])
    result = evaluate_pairs(RunLM(tmp_path / "prev"), pairs)
    assert result["scorer"] == "causal" and 0 <= result["macro_accuracy"] <= 1 and result["n_pairs"] == len(pairs)

    report = make_report([tmp_path / "prev"], tmp_path / "report")
    text = report.read_text()
    assert "| prev | previous |" in text and "neither generates nor infills" in text


def test_the_registry_refuses_what_is_not_an_objective():
    with pytest.raises(TypeError):
        register(int)
    with pytest.raises(TypeError):
        register(Objective)  # the base has no name of its own

import json

import pytest
from helpers import SHARED, assert_one_line_error

from hybridlm.errors import UserError
from hybridlm.evaluate.blimp import evaluate_pairs, load_pairs
from hybridlm.evaluate.lm import ScoringLM
from hybridlm.grammar import write_minimal_pairs
from hybridlm.objectives.causal import CausalObjective


class LengthLM(ScoringLM):
    """Scores a sentence by minus its length: shorter wins, equal lengths tie."""

    name, objective, bos_id, mask_id, max_len = "len", CausalObjective(10), 1, 3, 512

    def tokenize(self, text):
        return [7] * len(text), [True] * len(text)

    def selected_logits(self, ids, lengths, attention, select):
        import torch

        out = torch.zeros(int(select.sum()), 10)
        out[:, 7] = 10.0  # log p(7) is a constant < 0: score = -c * length
        return out


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_macro_average_and_ties(tmp_path):
    rows = [
        {"sentence_good": "ab", "sentence_bad": "abc", "UID": "p1", "field": "f"},  # correct
        {"sentence_good": "abcd", "sentence_bad": "ab", "UID": "p1", "field": "f"},  # wrong
        {"sentence_good": "xy", "sentence_bad": "zw", "UID": "p2", "field": "g"},  # tie: never correct
        {"sentence_good": "x", "sentence_bad": "zw", "UID": "p2", "field": "g"},  # correct
        {"sentence_good": "x", "sentence_bad": "zw", "UID": "p3", "field": "g"},  # correct
    ]
    pairs = load_pairs([_write(tmp_path / "a.jsonl", rows)])
    r = evaluate_pairs(LengthLM(), pairs)
    assert r["paradigms"]["p1"]["accuracy"] == 0.5 and r["paradigms"]["p2"]["accuracy"] == 0.5
    assert r["macro_accuracy"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert r["micro_accuracy"] == pytest.approx(3 / 5)
    assert r["ties"] == 1 and r["fields"]["g"]["n"] == 3


def test_limit_and_directory_loading(tmp_path):
    write_minimal_pairs(tmp_path, n_per_paradigm=7)
    pairs = load_pairs([tmp_path], limit=3)
    assert len(pairs) == 6 * 3 and len({p["UID"] for p in pairs}) == 6


def test_bad_files_name_file_and_line(cli, tmp_path):
    f = _write(tmp_path / "x.jsonl", [{"sentence_good": "a b", "sentence_bad": "b a"}, {"sentence_good": "only"}])
    with pytest.raises(UserError, match=r"x.jsonl:2: missing field 'sentence_bad'"):
        load_pairs([f])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="empty"):
        load_pairs([tmp_path / "empty.jsonl"])
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="broken.jsonl:1: not valid JSON"):
        load_pairs([tmp_path / "broken.jsonl"])
    proc = cli("eval", "blimp", "--run", tmp_path, "--data", f, check=False)
    assert_one_line_error(proc)


@pytest.mark.skipif(not (SHARED / "blimp").is_dir(), reason="../shared/data/blimp is not on this machine")
def test_loads_all_67_blimp_paradigms():
    pairs = load_pairs([SHARED / "blimp"], limit=2)
    assert len({p["UID"] for p in pairs}) == 67 and len(pairs) == 134
    assert {"morphology", "syntax", "semantics", "syntax_semantics", "syntax-semantics"} & {p["field"] for p in pairs}

import math

import pytest
import torch
from helpers import FakeLM

from hybridlm.evaluate.lm import HFLM
from hybridlm.evaluate.scoring import SCORERS, _copies, score_sentences
from hybridlm.objectives.masked import MaskedObjective

transformers = pytest.importorskip("transformers")

SENTENCES = ["the cat sleeps .", "these dogs near the river run quickly .", "a boy sees himself ."]


def test_causal_scores_equal_direct_transformers(hf_causal):
    lm = HFLM(hf_causal)
    ours = score_sentences(lm, SENTENCES, "causal")
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_causal).eval()
    tok = transformers.AutoTokenizer.from_pretrained(hf_causal)
    for s, got in zip(SENTENCES, ours):
        ids = torch.tensor([[tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.double(), -1)
        want = logp[0, :-1].gather(-1, ids[0, 1:, None]).sum().item()
        assert got == pytest.approx(want, abs=1e-4)


def test_pll_equals_naive_one_mask_loop(hf_masked):
    lm = HFLM(hf_masked)
    assert lm.kind == "masked"
    ours = score_sentences(lm, SENTENCES, "pll", max_batch_tokens=64)  # several batches
    model = transformers.AutoModelForMaskedLM.from_pretrained(hf_masked).eval()
    tok = transformers.AutoTokenizer.from_pretrained(hf_masked)
    for s, got in zip(SENTENCES, ours):
        ids = [tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]
        want = 0.0
        for i in range(1, len(ids)):
            masked = torch.tensor([ids[:i] + [tok.mask_token_id] + ids[i + 1 :]])
            with torch.no_grad():
                want += torch.log_softmax(model(masked).logits[0, i].double(), -1)[ids[i]].item()
        assert got == pytest.approx(want, abs=1e-4)


def test_elbo_of_uniform_model_is_exact():
    lm = FakeLM(50)
    for s in ("ab c", "hello world"):
        n = len(s.replace(" ", ""))
        assert score_sentences(lm, [s], "elbo")[0] == pytest.approx(-n * math.log(49), rel=1e-6)  # fp32 logsumexp


def test_within_word_pll_masks_the_rest_of_the_word():
    lm = FakeLM(objective=MaskedObjective)
    plain = _copies(SCORERS["pll"], lm, 0, "abc de", 1)
    word = _copies(SCORERS["pll-word"], lm, 0, "abc de", 1)
    assert len(plain) == len(word) == 5
    masks = [[i for i, t in enumerate(c.ids) if t == 3] for c in word]
    assert masks == [[1, 2, 3], [2, 3], [3], [4, 5], [5]]
    mntp = _copies(SCORERS["mntp"], lm, 0, "abc de", 1)
    assert [c.positions for c in mntp] == [[0], [1], [2], [3], [4]]  # read at i-1


def test_scorer_must_fit_the_model(hf_causal):
    from hybridlm.errors import UserError

    with pytest.raises(UserError, match="supports causal"):
        score_sentences(HFLM(hf_causal), SENTENCES, "pll")


def test_options_sharing_a_prefix_score_as_alone(runs):
    """Causal copies that begin with the same context are packed behind one copy of it (the prefix computed
    once per item: entity tracking's five options, the harness's choices) and score what they score alone,
    greedy flags included; a copy that is a prefix of another, and unrelated sentences, are unaffected."""
    from hybridlm.evaluate import official
    from hybridlm.evaluate.lm import RunLM
    from hybridlm.evaluate.scoring import SHARED_PREFIX, score_completions, score_copies, share_prefixes

    lm = RunLM(runs["causal"])
    context = "Box 0 contains the dog , Box 1 contains the cat and the bird , Box 2 contains nothing . Box 1 contains "
    texts = [(context + option, len(context), None) for option in ("the cat .", "the dog .", "nothing .", "the")]
    texts += [(s, 0, None) for s in SENTENCES] + [(context.strip(), 0, None)]
    copies = [
        c for i, (t, start, _) in enumerate(texts) for c in _copies(SCORERS["causal"], lm, i, t, completion_start=start)
    ]
    rows = share_prefixes(copies, lm.max_len)
    packed = [r for r in rows if r.segments]
    assert len(packed) == 1 and max(packed[0].segments) == 5 and len(rows) == len(copies) - 4
    assert packed[0].segments.count(0) >= SHARED_PREFIX
    alone = score_copies(lm, copies, len(texts), True, greedy=True, share_prefix=False)
    shared = score_copies(lm, copies, len(texts), True, greedy=True)
    assert shared[1] == alone[1]
    assert shared[0] == pytest.approx(alone[0], abs=2e-5)
    assert score_completions(lm, texts) == pytest.approx(alone[0], abs=2e-5)
    # the official convention's causal backend shares too
    tok = lm.pipeline_tokenizer()
    official_copies = [
        c for i, (t, start, _) in enumerate(texts) for c in official._completion_copies(lm, tok, i, t, start, "causal")
    ]
    assert official.completion_scores(lm, texts, "causal") == pytest.approx(
        score_copies(lm, official_copies, len(texts), True, share_prefix=False), abs=2e-5
    )


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_transformers_model_shares_prefixes_as_alone(hf_causal, attention):
    """A local causal `transformers` model packs a shared prefix too (a custom 4D mask and per-row positions,
    in each attention implementation's own form) and scores what its copies score alone."""
    from hybridlm.evaluate.scoring import score_copies, share_prefixes

    lm = HFLM(hf_causal)
    lm.model.set_attn_implementation(attention)
    assert lm.shares_prefixes
    context = "the cat sleeps . these dogs near the river run quickly . a boy sees himself . "
    texts = [(context + option, len(context)) for option in ("the cat sleeps .", "a boy .", "the river")]
    texts += [(s, 0) for s in SENTENCES]
    copies = [c for i, (t, s) in enumerate(texts) for c in _copies(SCORERS["causal"], lm, i, t, completion_start=s)]
    assert len(share_prefixes(copies, lm.max_len)) == len(copies) - 2  # the three options in one row
    alone = score_copies(lm, copies, len(texts), True, greedy=True, share_prefix=False)
    shared = score_copies(lm, copies, len(texts), True, greedy=True)
    assert shared[1] == alone[1]
    assert shared[0] == pytest.approx(alone[0], abs=2e-5)


def test_a_model_that_ignores_the_mask_does_not_share(hf_causal, hf_masked):
    """The probe turns sharing off where packed rows would not score as alone (here a model that drops the
    custom mask and positions), and masked models never share."""
    lm = HFLM(hf_causal)
    forward = lm.model.forward
    lm.model.forward = lambda input_ids, attention_mask=None, **kw: forward(input_ids=input_ids)
    assert not lm.shares_prefixes
    assert not HFLM(hf_masked).shares_prefixes

"""One end-of-text rule (issue 39, part 4): `</s>` ends a sample of every objective and sampler, the rest is
dropped; --min-new-tokens keeps it away until then; --stop strings cut the text as the harness's `until`."""

from types import SimpleNamespace

import pytest
import torch
from test_samplers import BOS, _peaked_model

from hybridlm.generate import cut_at_strings, decode_rows, generate_samples
from hybridlm.objectives import (
    BlockDiffusionObjective,
    CausalObjective,
    DiffusionObjective,
    MaskedObjective,
    MntpObjective,
)
from hybridlm.objectives.base import SPECIAL
from hybridlm.samplers import RowRandom, Sampling
from hybridlm.tokenizer import load_tokenizer

EOS = SPECIAL["eos"]


class Ending(torch.nn.Module):
    """A model that wants to end the text everywhere: `</s>` gets a large logit at every position."""

    def __init__(self, model):
        super().__init__()
        self.model, self.cfg, self.blocks = model, model.cfg, model.blocks

    def head(self, h):
        return self._end(self.model.head(h))

    def _end(self, logits):
        logits = logits.clone()
        logits[..., EOS] += 100.0
        return logits

    def forward(self, ids, *args, logits=False, **kw):
        out = self.model(ids, *args, logits=logits, **kw)
        return self._end(out) if logits else out


WAYS = [
    (CausalObjective, "autoregressive"),
    *[(MaskedObjective, s) for s in ("first", "confidence", "margin", "entropy")],
    (MntpObjective, "confidence"),
    *[
        (DiffusionObjective, s)
        for s in ("ancestral", "remdm", "first-hitting", "confidence", "margin", "entropy", "first")
    ],  # fmt: skip
    *[(BlockDiffusionObjective, s) for s in ("ancestral", "first-hitting", "confidence")],
]


@pytest.mark.parametrize("objective,sampler", WAYS, ids=[f"{o.name}-{s}" for o, s in WAYS])
def test_end_of_text_ends_every_objective_and_sampler(tokenizer_dir, objective, sampler):
    vocab = 320
    obj = objective(vocab, block_size=4) if objective is BlockDiffusionObjective else objective(vocab)
    model = Ending(_peaked_model(vocab, 3, 4.0))
    run = SimpleNamespace(model=model, objective=obj, tokenizer=load_tokenizer(tokenizer_dir))
    sampler = "" if sampler == "autoregressive" else sampler
    eta = {"eta": 0.2} if sampler == "remdm" else {}
    calls_of = {}
    for least in (0, 3, 12):
        sampling = Sampling(sampler, steps=12, min_new_tokens=least, **eta)
        new, calls = decode_rows(run, [BOS, 40, 41], 12, sampling, 3, RowRandom.seeded(1, 3))
        # </s> as soon as it may be drawn; it and the rest are dropped
        assert [len(row) for row in new] == [least] * 3 and all(EOS not in row for row in new), (least, new)
        calls_of[least] = max(calls)
    if objective in (CausalObjective, MaskedObjective, MntpObjective, BlockDiffusionObjective):
        assert calls_of[0] < calls_of[12]  # decoding stops once every row has ended


def test_stop_strings_cut_the_text_and_its_tokens(runs):
    from hybridlm.runs import load_run

    run = load_run(runs["causal"])
    tok = run.tokenizer
    prompt = [BOS] + tok.encode("the", add_special_tokens=False).ids
    new = tok.encode("cat sat . the dog ran .", add_special_tokens=False).ids

    def text_of(ids):
        return cut_at_strings(tok, prompt, ids)[1]

    ids, text = cut_at_strings(tok, prompt, new, (".", "dog"))
    assert text.strip() == "cat sat" and tok.decode(ids).strip() == "cat sat"
    assert cut_at_strings(tok, prompt, new, ("zebra",)) == cut_at_strings(tok, prompt, new) == (new, text_of(new))
    plain = generate_samples(run, "the", 20, Sampling(temperature=0.0), 1)
    word = plain.texts[0].split()[1]
    stopped = generate_samples(run, "the", 20, Sampling(temperature=0.0, stop=(" " + word,)), 1)
    assert stopped.texts[0] == plain.texts[0][: plain.texts[0].index(" " + word)]
    assert len(stopped.token_ids[0]) < len(plain.token_ids[0])

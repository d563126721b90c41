"""The samplers of diffusion and block diffusion: what each must equal, and what it must cost."""

from collections import Counter

import pytest
import torch
from helpers import assert_one_line_error
from scipy.stats import chi2_contingency

from hybridlm.errors import UserError
from hybridlm.generate import unmask_rows
from hybridlm.model import build_model
from hybridlm.objectives import BlockDiffusionObjective, DiffusionObjective
from hybridlm.objectives.base import SPECIAL
from hybridlm.samplers import Sampling

MASK, BOS = SPECIAL["mask"], SPECIAL["bos"]
SPECIALS = list(SPECIAL.values())


def _peaked_model(vocab, seed=0, scale=12.0):
    """A random tiny model whose predictions are far from uniform and depend on the context."""
    torch.manual_seed(seed)
    model = build_model("tiny", vocab).eval()
    with torch.no_grad():
        model.embed.weight.mul_(scale)
    return model


def _canvas(rows, prompt, masks):
    return torch.tensor([[BOS, *prompt] + [MASK] * masks] * rows)


def _sample(model, objective, x, sampling, seed=0, use_cache=True):
    return unmask_rows(model, objective, x, MASK, sampling, torch.Generator().manual_seed(seed), SPECIALS, 0, use_cache)


def test_remdm_with_eta_zero_is_ancestral_draw_for_draw():
    model, obj = _peaked_model(40), DiffusionObjective(40)
    x = _canvas(32, [9], 10)
    a, nfe_a = _sample(model, obj, x, Sampling("ancestral", steps=8))
    b, nfe_b = _sample(model, obj, x, Sampling("remdm", steps=8, eta=0.0))
    assert torch.equal(a, b) and torch.equal(nfe_a, nfe_b)
    assert not (a == MASK).any()
    c, nfe_c = _sample(model, obj, x, Sampling("remdm", steps=8, eta=0.5))
    assert not (c == MASK).any() and not torch.equal(a, c)
    assert nfe_c.double().mean() > nfe_a.double().mean()  # remasked tokens cost calls
    d, _ = _sample(model, obj, x, Sampling("remdm", steps=8, eta=0.5, remdm_schedule="rescale"))
    assert not (d == MASK).any() and torch.equal(d[:, :2], x[:, :2])  # the prompt is never remasked


def _distribution(samples: torch.Tensor) -> Counter:
    return Counter(map(tuple, samples.tolist()))


def _chi2_p(a: Counter, b: Counter) -> float:
    keys = sorted(set(a) | set(b))
    table = [[a[k] + 0.5 for k in keys], [b[k] + 0.5 for k in keys]]  # +0.5: no empty cells
    return chi2_contingency(table)[1]


def test_first_hitting_draws_what_ancestral_draws_with_one_call_per_token():
    """The exact reverse process two ways: first-hitting reveals one uniformly chosen masked token per
    call; ancestral with many more steps than tokens almost never reveals two in one round."""
    vocab = len(SPECIAL) + 3  # three real tokens: 27 outcomes for three masks
    model, obj = _peaked_model(vocab, seed=1), DiffusionObjective(vocab)
    x = _canvas(2000, [], 3)
    fh, nfe = _sample(model, obj, x, Sampling("first-hitting"), seed=1)
    assert (nfe == 3).all()  # exactly one network call per revealed token
    anc, nfe_anc = _sample(model, obj, x, Sampling("ancestral", steps=1000), seed=2)
    assert (nfe_anc <= 3).all()  # the cache: a call only after a change
    p_same = _chi2_p(_distribution(fh[:, 1:]), _distribution(anc[:, 1:]))
    assert p_same > 0.01
    # the test can tell samplers apart: revealing by confidence draws another distribution
    conf, _ = _sample(model, obj, x, Sampling("confidence", steps=3), seed=3)
    assert _chi2_p(_distribution(fh[:, 1:]), _distribution(conf[:, 1:])) < 1e-6


@pytest.mark.parametrize("sampler", ["ancestral", "confidence", "remdm", "first-hitting"])
@pytest.mark.parametrize("prompt", [[], [7, 8, 9, 10, 11, 12]])
def test_block_diffusion_cached_sampling_equals_uncached(sampler, prompt):
    model, obj = _peaked_model(48, seed=2, scale=4.0), BlockDiffusionObjective(48, block_size=4)
    x = _canvas(6, prompt, 13)
    eta = 0.3 if sampler == "remdm" else 0.0
    a, nfe_cached = _sample(model, obj, x, Sampling(sampler, steps=12, eta=eta), use_cache=True)
    b, _ = _sample(model, obj, x, Sampling(sampler, steps=12, eta=eta), use_cache=False)
    assert torch.equal(a, b)
    assert not (a == MASK).any() and torch.equal(a[:, : 1 + len(prompt)], x[:, : 1 + len(prompt)])


class Recorder(torch.nn.Module):
    """The model, recording every canvas it is called on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []
        self.cfg, self.blocks, self.head = model.cfg, model.blocks, model.head

    def forward(self, ids, *args, **kw):
        self.seen.append(ids.clone())
        return self.model(ids, *args, **kw)


def test_semi_autoregressive_diffusion_reveals_blocks_left_to_right():
    model, obj = Recorder(_peaked_model(40)), DiffusionObjective(40)
    x = _canvas(4, [9], 12)
    out, nfe = _sample(model, obj, x, Sampling("confidence", steps=12, block_length=4))
    assert not (out == MASK).any() and (nfe == 12).all()  # 3 blocks x 4 rounds
    for canvas in model.seen:
        blocks = (canvas[:, 2:] != MASK).view(len(canvas), 3, 4)
        started = blocks.any(2)
        finished = blocks.all(2)
        for j in range(1, 3):  # a block is begun only when the blocks before it are finished
            assert (~started[:, j] | finished[:, :j].all(1)).all()


def test_block_diffusion_stops_after_the_block_where_every_row_ended():
    model, obj = _peaked_model(48, seed=3, scale=4.0), BlockDiffusionObjective(48, block_size=4)
    eos = SPECIAL["eos"]
    with torch.no_grad():  # every prediction is </s>
        model.embed.weight[eos].fill_(50.0)
    x = _canvas(2, [], 15)
    forbid = [i for i in SPECIALS if i != eos]
    out, _ = unmask_rows(model, obj, x, MASK, Sampling("confidence", steps=16), torch.Generator(), forbid, 0,
                         True, stop_ids=[eos])  # fmt: skip
    assert out.shape[1] < x.shape[1] and (out[:, 1:] == eos).any(1).all()


def test_bad_sampling_is_one_line():
    with pytest.raises(UserError, match="unknown sampler"):
        Sampling("nucleus").check()
    with pytest.raises(UserError, match="remdm"):
        Sampling("confidence", eta=0.5).check()
    with pytest.raises(UserError, match="eta"):
        Sampling("remdm", eta=2.0, remdm_schedule="rescale").check()


def test_generate_cli_draws_a_batch_with_every_sampler(runs, cli):
    for sampler in ("ancestral", "first-hitting", "margin", "entropy"):
        r = cli("generate", "--run", runs["diffusion"], "--prompt", "the", "--num-samples", 2, "--max-new-tokens", 6,
                "--sampler", sampler, "--steps", 6, "--block-length", 3)  # fmt: skip
        assert len(r.stdout.strip().split("\n")) == 2
    r = cli("infill", "--run", runs["diffusion"], "--text", "the <mask> sat .", "--sampler", "first-hitting")
    assert r.stdout.strip().startswith("the") and "<mask>" not in r.stdout
    # the older --order still works: random = ancestral
    assert cli("generate", "--run", runs["diffusion"], "--order", "random", "--max-new-tokens", 4).stdout.strip()


@pytest.mark.parametrize(
    "flag, value",
    [("--min-p", 1.0), ("--min-p", 1.5), ("--top-p", 0.0), ("--temperature", float("inf")), ("--temperature", 0.0),
     ("--steps", 0), ("--steps", 100_001), ("--top-k", -1), ("--block-length", -2)],
)  # fmt: skip
def test_the_cli_refuses_exactly_what_sampling_check_refuses(cli, runs, flag, value):
    """One rule per knob, the module's: hlm generate accepts a value exactly when Sampling.check does."""
    try:
        Sampling(**{flag[2:].replace("-", "_"): value}).check()
        accepted = True
    except UserError:
        accepted = False
    proc = cli("generate", "--run", runs["diffusion"], "--max-new-tokens", 2, "--steps", 2, flag, value, check=False)
    assert (proc.returncode == 0) == accepted, (flag, value, proc.stderr)
    if not accepted:
        assert_one_line_error(proc, flag)

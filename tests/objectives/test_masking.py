import torch

from hybridlm.objectives.hybrid import HybridObjective
from hybridlm.objectives.masked import MaskedObjective, span_mask


def _ids(B=64, L=128, V=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, L), generator=g)
    ids[:, 0] = 1  # <s>
    ids[:, L // 2] = 1
    return ids


def test_span_mask_rate_and_specials():
    ids = _ids()
    for rate in (0.15, 0.3):
        _, mask = span_mask(ids, rate, torch.Generator().manual_seed(1), vocab_size=300)
        maskable = (ids >= 5).sum()
        assert abs(mask.sum().item() / maskable.item() - rate) < 0.02
        assert not mask[ids < 5].any()  # special tokens are never masked


def test_span_lengths_are_one_to_three():
    ids = torch.full((256, 200), 7)
    _, mask = span_mask(ids, 0.05, torch.Generator().manual_seed(2), vocab_size=300)
    runs = []
    for row in mask.int().tolist():
        s = "".join(map(str, row))
        runs += [len(r) for r in s.split("0") if r]
    counts = torch.bincount(torch.tensor(runs))
    assert counts[1] > 0 and counts[2] > 0 and counts[3] > 0
    assert (counts[4:].sum() if len(counts) > 4 else 0) < 0.05 * len(runs)  # only where spans touch


def test_replacement_is_80_10_10():
    ids = _ids(256, 128)
    corrupted, mask = span_mask(ids, 0.3, torch.Generator().manual_seed(3), vocab_size=300)
    m = mask.sum().item()
    as_mask = (corrupted[mask] == 3).sum().item() / m
    kept = (corrupted[mask] == ids[mask]).sum().item() / m
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03 + 1 / 295
    assert (corrupted[~mask] == ids[~mask]).all()
    assert (corrupted >= 0).all() and (corrupted < 300).all()


def test_masked_objective_targets_only_masked_positions():
    obj = MaskedObjective(300)
    ids = _ids(16, 65)
    b = obj.corrupt(ids, torch.Generator().manual_seed(0), fraction_done=0.0)
    scored = b.loss_weights > 0
    assert (b.targets == ids[:, :-1]).all()
    assert (b.input_ids[~scored] == ids[:, :-1][~scored]).all()
    assert abs(b.loss_weights.sum().item() - 1) < 1e-5
    assert not b.attention.is_causal.any()
    rate0 = scored.float().mean().item()
    b1 = obj.corrupt(ids, torch.Generator().manual_seed(0), fraction_done=1.0)
    assert rate0 > 0.25 and (b1.loss_weights > 0).float().mean().item() < 0.2  # 30% -> 15% anneal
    val = obj.corrupt(ids, torch.Generator().manual_seed(0), fraction_done=0.0, train=False)
    assert (val.loss_weights > 0).float().mean().item() < 0.2  # validation uses the final ratio


def test_corruption_is_reproducible():
    obj = HybridObjective(300)
    ids = _ids(8, 33)
    a = obj.corrupt(ids, torch.Generator().manual_seed(4))
    b = obj.corrupt(ids, torch.Generator().manual_seed(4))
    assert (a.input_ids == b.input_ids).all() and (a.attention.is_causal == b.attention.is_causal).all()

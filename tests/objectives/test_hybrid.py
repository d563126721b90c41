import torch

from hybridlm.objectives.hybrid import HybridObjective


def test_masked_next_token_alignment():
    obj = HybridObjective(300, causal_fraction=0.0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 300, (8, 65), generator=g)
    b = obj.corrupt(ids, g)
    assert b.input_ids.shape == (8, 64)
    assert (b.targets == ids[:, 1:]).all()  # position i predicts token i+1
    scored = b.loss_weights > 0
    # the full corrupted sequence: a scored position i is one whose *next* token was corrupted
    next_was_mask = b.input_ids[:, 1:] == 3
    assert (scored[:, :-1] | ~next_was_mask).all()  # every <mask> at i+1 is predicted from i
    # and a scored target is never visible at its own input position unless kept/randomised
    visible = b.input_ids[:, 1:] == ids[:, 1:-1]
    assert (visible[scored[:, :-1]]).float().mean() < 0.2  # ~10% kept
    assert not b.attention.is_causal.any()


def test_causal_rows_are_plain_next_token_prediction():
    obj = HybridObjective(300, causal_fraction=1.0)
    ids = torch.randint(5, 300, (4, 17))
    b = obj.corrupt(ids, torch.Generator().manual_seed(1))
    assert b.attention.is_causal.all() and (b.input_ids == ids[:, :-1]).all() and (b.loss_weights > 0).all()


def test_mix_ratio_per_sequence_and_loss_weights():
    obj = HybridObjective(300, causal_fraction=1 / 16)
    g = torch.Generator().manual_seed(2)
    n_causal, rows = 0, 0
    for _ in range(200):
        b = obj.corrupt(torch.randint(5, 300, (8, 33), generator=g), g)
        n_causal += int(b.attention.is_causal.sum())
        rows += len(b)
        w = b.loss_weights
        # each mode's weights sum to its share of the rows: GPT-BERT's per-objective means
        c = b.attention.is_causal
        assert abs(w[c].sum().item() - c.float().mean().item()) < 1e-5
        if (~c).any():
            assert abs(w[~c].sum().item() - (~c).float().mean().item()) < 1e-5
    assert abs(n_causal / rows - 1 / 16) < 0.015  # any ratio works with a batch of 8

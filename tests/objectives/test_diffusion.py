import math

import pytest
import torch

from hybridlm.errors import UserError
from hybridlm.losses import loss_of
from hybridlm.model import build_model
from hybridlm.objectives.diffusion import DiffusionObjective, alpha_and_weight, frequency_exponents, sample_times


class Uniform(torch.nn.Module):
    """A model that predicts the uniform distribution: its NELBO is known in closed form."""

    def __init__(self, V):
        super().__init__()
        self.V = V

        self.output_weight = torch.zeros(V, 1)  # zero hidden states and head: all logits 0

    def forward(self, ids, attention=None, mtp=False):
        return torch.zeros(*ids.shape, 1)


@pytest.mark.parametrize("schedule", ["loglinear", "linear", "cosine"])
def test_weight_is_minus_alpha_prime_over_one_minus_alpha(schedule):
    t = torch.tensor([0.1, 0.3, 0.5, 0.9], dtype=torch.float64)
    h = 1e-6
    a, w = alpha_and_weight(t, schedule)
    a_plus, _ = alpha_and_weight(t + h, schedule)
    a_minus, _ = alpha_and_weight(t - h, schedule)
    numeric = -(a_plus - a_minus) / (2 * h) / (1 - a)
    assert torch.allclose(w, numeric, rtol=1e-4)
    a0, _ = alpha_and_weight(torch.tensor([1e-9], dtype=torch.float64), schedule)
    a1, _ = alpha_and_weight(torch.tensor([1.0], dtype=torch.float64), schedule)
    assert a0.item() > 0.999 and a1.item() < 1e-6


def test_hand_computed_loss_at_fixed_t():
    V, L = 50, 4
    obj = DiffusionObjective(V, document_mask=False)
    ids = torch.tensor([[10, 11, 12, 13, 14]])
    b = obj.corrupt(ids, torch.Generator().manual_seed(0), t=torch.tensor([0.5]))
    k = int((b.input_ids == 3).sum())
    loss, _ = loss_of(Uniform(V), obj, b)
    # k masked tokens, each -log(1/(V-1)) (SUBS: <mask> is never predicted) x weight 1/t = 2, over L tokens
    assert loss.item() == pytest.approx(k * 2 * math.log(V - 1) / L, rel=1e-5)


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
def test_nelbo_of_uniform_model_is_log_vocab(schedule):
    """E_t[sum_i w(t) 1[masked] CE] = log(V-1) * (alpha(0) - alpha(1)) = log(V-1) per token."""
    V = 64
    obj = DiffusionObjective(V, schedule=schedule, document_mask=False)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (256, 33), generator=g)
    losses = [loss_of(Uniform(V), obj, obj.corrupt(ids, g))[0].item() for _ in range(20)]
    assert sum(losses) / len(losses) == pytest.approx(math.log(V - 1), rel=0.03)


def test_mask_rate_follows_alpha_and_times_are_stratified():
    obj = DiffusionObjective(300)
    t = sample_times(1000, torch.Generator().manual_seed(0))
    assert t.min() >= 1e-3 and t.max() < 1
    assert torch.histc(t, bins=10, min=0, max=1).min() >= 99  # low discrepancy: 100 per decile
    ids = torch.randint(5, 300, (1000, 65))
    b = obj.corrupt(ids, torch.Generator().manual_seed(0), t=torch.full((1000,), 0.3))
    assert abs((b.input_ids == 3).float().mean().item() - 0.3) < 0.01
    assert ((b.loss_weights > 0) == (b.input_ids == 3)).all()


def test_frequency_informed_masking_masks_rare_tokens_more():
    counts = torch.ones(300)
    counts[5:100] = 1000  # frequent
    obj = DiffusionObjective(300, frequency_masking=1.0, unigram=counts.numpy())
    ids = torch.cat([torch.randint(5, 100, (500, 33)), torch.randint(100, 300, (500, 33))], 1)
    b = obj.corrupt(ids, torch.Generator().manual_seed(0), t=torch.full((500,), 0.3))
    frequent_rate = (b.input_ids[:, :33] == 3).float().mean()
    rare_rate = (b.input_ids[:, 33:] == 3).float().mean()
    assert rare_rate > frequent_rate + 0.1
    s = frequency_exponents(counts.numpy(), 1.0)
    assert s[200] > 1 > s[50]


def test_diffusion_trains_with_the_real_model():
    torch.manual_seed(0)
    model = build_model("tiny", 64)
    obj = DiffusionObjective(64)
    ids = torch.randint(5, 64, (8, 33))
    loss, stats = loss_of(model, obj, obj.corrupt(ids, torch.Generator().manual_seed(0)))
    loss.backward()
    assert math.isfinite(loss.item()) and model.embed.weight.grad.abs().sum() > 0


def test_count_estimator_has_the_same_nelbo():
    """Sampling the number of masked tokens k ~ U{1..n} with weight 1/k is the same bound."""
    V = 64
    obj = DiffusionObjective(V, diffusion_estimator="count", document_mask=False)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (256, 33), generator=g)
    b = obj.corrupt(ids, g)
    k = (b.input_ids == 3).sum(1)
    assert k.min() >= 1 and k.max() <= 32 and abs(k.float().mean().item() - 16.5) < 1.5
    # each sequence contributes the mean CE of its masked tokens: exactly log(V-1) for a uniform model
    loss, _ = loss_of(Uniform(V), obj, b)
    assert loss.item() == pytest.approx(math.log(V - 1), rel=1e-5)
    with pytest.raises(UserError, match="log-linear"):
        DiffusionObjective(V, diffusion_estimator="count", schedule="cosine")

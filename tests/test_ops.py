import pytest
import torch
import torch.nn.functional as F

import hybridlm.ops as ops


def plain(h, W, t, w, z_loss, masked_column):
    logits = F.linear(h, W).float()
    if masked_column is not None:
        logits[:, masked_column] = float("-inf")
    ce = F.cross_entropy(logits, t, reduction="none")
    loss = (w * ce).sum() + z_loss * (w * torch.logsumexp(logits, -1).pow(2)).sum()
    return loss, ce


def run(fn, h0, W0, *args, dtype=None):
    h, W = h0.clone().requires_grad_(), W0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        loss, ce = fn(h, W, *args)
    loss.backward()
    return loss.detach(), ce.detach(), h.grad, W.grad


@pytest.mark.parametrize("z_loss,masked_column", [(0.0, None), (1e-2, 3)])
def test_fused_head_equals_plain_cross_entropy(monkeypatch, z_loss, masked_column):
    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", 7 * 97)  # several chunks, the last one partial
    g = torch.Generator().manual_seed(0)
    N, D, V = 50, 16, 97
    h, W = torch.randn(N, D, generator=g), torch.randn(V, D, generator=g)
    t = torch.randint(4, V, (N,), generator=g)
    w = torch.rand(N, generator=g)
    ref = run(plain, h, W, t, w, z_loss, masked_column)
    got = run(ops.linear_cross_entropy, h, W, t, w, z_loss, masked_column)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the masked column gets no gradient through the softmax, only as others' target (never here)
    if masked_column is not None:
        assert got[3][masked_column].abs().max() == 0


def test_fused_head_under_bf16_is_at_least_as_accurate_as_plain():
    g = torch.Generator().manual_seed(1)
    N, D, V = 256, 64, 2048
    h, W = torch.randn(N, D, generator=g), 0.1 * torch.randn(V, D, generator=g)
    t, w = torch.randint(0, V, (N,), generator=g), torch.rand(N, generator=g) / N
    exact = run(plain, h.double(), W.double(), t, w.double(), 0.0, None)
    fused = run(ops.linear_cross_entropy, h, W, t, w, 0.0, None, dtype="bf16")
    base = run(plain, h, W, t, w, 0.0, None, dtype="bf16")

    def err(x, i):
        return ((x[i].double() - exact[i]).norm() / exact[i].norm()).item()

    assert torch.equal(fused[1], base[1])  # the same bf16 logits give the same fp32 CE
    for i in (2, 3):  # gradients of hidden states and head
        assert err(fused, i) < 1e-2 and err(fused, i) <= 1.05 * err(base, i)


def test_no_gradient_work_without_grad():
    h, W = torch.randn(8, 4), torch.randn(11, 4)
    loss, ce = ops.linear_cross_entropy(h, W, torch.arange(8), torch.ones(8))
    assert not loss.requires_grad and ce.shape == (8,)
    torch.testing.assert_close(loss, F.cross_entropy(h @ W.t(), torch.arange(8), reduction="sum"))
    # parameters that require grad, under no_grad (validation): only the logits' matmul runs
    from torch.utils.flop_counter import FlopCounterMode

    W.requires_grad_(True)
    for grad_enabled, matmuls in ((False, 1), (True, 3)):
        with torch.set_grad_enabled(grad_enabled), FlopCounterMode(display=False) as counter:
            ops.linear_cross_entropy(h, W, torch.arange(8), torch.ones(8))
        assert counter.get_total_flops() == matmuls * 2 * 8 * 11 * 4


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [None, "bf16"])
def test_compiled_chunks_equal_eager_and_compile_once(monkeypatch, dtype):
    """--compile runs the fused head's chunks through Inductor: the same loss, CE and gradients as eager (to
    rounding), with the z-loss and the masked column, for every chunk size (a last chunk of 1 row included),
    in one graph with gradients and one without, compiled once."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", 16 * 97)  # chunks of 16 rows
    monkeypatch.setattr(ops, "COMPILED_CHUNK_ELEMENTS", 16 * 97)
    torch._dynamo.reset()
    counters.clear()
    g = torch.Generator().manual_seed(2)
    D, V = 16, 97
    W = torch.randn(V, D, generator=g)
    tol = dict(rtol=2e-2, atol=2e-3) if dtype else dict(rtol=1e-5, atol=1e-5)
    for N in (40, 17, 33, 5):  # remainders of 8, 1, 1 and 5 rows
        h, t, w = torch.randn(N, D, generator=g), torch.randint(4, V, (N,), generator=g), torch.rand(N, generator=g)
        args = (t, w, 1e-2, 3)
        eager = run(ops.linear_cross_entropy, h, W, *args, dtype=dtype)
        compiled = run(lambda *a: ops.linear_cross_entropy(*a, compile_backend="inductor"), h, W, *args, dtype=dtype)
        for a, b in zip(compiled, eager):
            torch.testing.assert_close(a, b, **tol)
        with torch.no_grad():
            loss, ce = ops.linear_cross_entropy(h, W, *args, compile_backend="inductor")
        torch.testing.assert_close(loss, eager[0], **tol)
        torch.testing.assert_close(ce, eager[1], **tol)
    assert counters["stats"]["unique_graphs"] == 2  # with gradients and without, whatever the rows

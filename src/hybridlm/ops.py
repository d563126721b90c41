"""Fused output head + weighted cross-entropy, computed in row chunks.

The plain path materialises the logits of every scored position ([N, V], e.g. 2,048 × 16,384),
upcasts them to fp32, writes a log-softmax of the same size, and in the backward pass fills and
reads tensors of that size again. Here each chunk of rows computes its logits, its fp32
log-sum-exp and CE, and at once the gradient of the loss with respect to its hidden states and
the head weight (the loss is a sum, so the gradient is known in the forward pass). The [N, V]
tensors never exist; the numbers are the same as the plain path's (bf16 logits under bf16
autocast, softmax in fp32, gradients cast to the matmul dtype), which a test checks.

A compiled training step (`hlm train --compile`) also compiles the chunk (`compiled_chunk`): Inductor
fuses its log-softmax, exp, casts and target-column corrections into a few passes over the logits,
which eager runs as a dozen (measured 8% of a compiled causal step on a CPU). One graph serves every
chunk size (its rows marked dynamic, padded to a multiple of 8 so that no size is specialised; V and D static).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 1 << 22  # logits per chunk (16 MB in fp32): large matmuls, small temporaries
# compiled, a chunk's log-softmax is fused (no fp32 copy of the logits), so chunks can be 4x larger: fewer fp32
# sums into grad_w (measured on a CPU, causal `small`: 0.87 of a plain compiled head + CE's speed at 2^22, 0.97 at 2^24)
COMPILED_CHUNK_ELEMENTS = 1 << 24
PAD_ROWS = 8  # a compiled chunk's rows are a multiple of this (never 1: no recompilation for a 1-row chunk)


def _chunk(h_c, w_mat, t_c, wt_c, grad_w, z_loss: float, masked_column: int | None):
    """One chunk of rows: (its weighted CE sum, its z-loss sum or None, its CE per row, d loss / d h_c in fp32
    or None). With grad_w (fp32, the head's shape) it also adds d loss / d W into grad_w."""
    logits = h_c @ w_mat.t()
    if masked_column is not None:
        logits[:, masked_column] = float("-inf")
    logp = torch.log_softmax(logits, -1, dtype=torch.float32)  # one pass, fp32 whatever the matmul dtype
    logp_t = logp.gather(1, t_c[:, None]).squeeze(1)
    wt = wt_c.float()
    nll = (wt * -logp_t).sum()
    z = lse = None
    if z_loss:
        lse = logits.gather(1, t_c[:, None]).squeeze(1).float() - logp_t
        z = z_loss * (wt * lse.pow(2)).sum()
    if grad_w is None:
        return nll, z, -logp_t, None
    # d loss / d logits = s * softmax - w * onehot(t), with s = w * (1 + 2 z lse). The softmax goes to the
    # matmul dtype; the target column, where p - 1 would lose its digits in bf16, is applied separately in fp32.
    scale = wt * (1 + 2 * z_loss * lse) if z_loss else wt
    g = logp.exp().to(w_mat.dtype).scatter(1, t_c[:, None], 0)
    coef_t = scale * logp_t.exp() - wt
    grad_h = (g @ w_mat).float() * scale[:, None] + coef_t[:, None] * w_mat.index_select(0, t_c).float()
    grad_w += g.t() @ (h_c.float() * scale[:, None]).to(w_mat.dtype)  # summed in fp32 over chunks
    grad_w.index_add_(0, t_c, coef_t[:, None] * h_c.float())
    return nll, z, -logp_t, grad_h


@functools.cache
def compiled_chunk(backend: str = "inductor"):
    """`_chunk` under torch.compile: one graph per kind of call (with or without gradients)."""
    return torch.compile(_chunk, fullgraph=True, backend=backend)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, weights, z_loss, masked_column, compute_dtype, needs_grad, chunk):
        # detached: the chunk's inputs never require grad, so a compiled chunk sees one kind of tensor
        h = hidden.detach().to(compute_dtype)
        w_mat = weight.detach().to(compute_dtype)
        grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device) if needs_grad else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs_grad else None
        ce = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        compiled = chunk is not _chunk
        step = max(1, (COMPILED_CHUNK_ELEMENTS if compiled else CHUNK_ELEMENTS) // weight.shape[0])
        for start in range(0, h.shape[0], step):
            end = min(start + step, h.shape[0])
            h_c, t_c, wt_c = h[start:end], targets[start:end], weights[start:end]
            if compiled:
                pad = -(end - start) % PAD_ROWS
                if pad:  # rows of weight 0: they add nothing to the loss or grad_w
                    h_c, t_c, wt_c = F.pad(h_c, (0, 0, 0, pad)), F.pad(t_c, (0, pad)), F.pad(wt_c, (0, pad))
                for x in (h_c, t_c, wt_c):  # the rows vary (the last chunk, the scored positions); V and D do not
                    torch._dynamo.mark_dynamic(x, 0)
            nll, z, ce_c, grad_h_c = chunk(h_c, w_mat, t_c, wt_c, grad_w, z_loss, masked_column)
            ce[start:end] = ce_c[: end - start]
            loss += nll
            if z is not None:
                loss += z
            if needs_grad:
                grad_h[start:end] = grad_h_c[: end - start]
        if needs_grad:
            ctx.save_for_backward(grad_h, grad_w)
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        ctx.mark_non_differentiable(ce)
        return loss, ce

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce):
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_loss).to(ctx.hidden_dtype), (grad_w * grad_loss).to(ctx.weight_dtype), *[None] * 7


def linear_cross_entropy(
    hidden,
    weight,
    targets,
    weights,
    z_loss: float = 0.0,
    masked_column: int | None = None,
    compile_backend: str | None = None,
):
    """(sum_i weights_i * CE(hidden_i @ weight.T, targets_i) [+ z-loss], CE per row, detached).

    Under autocast the matmuls run in its dtype (as `F.linear` would); the softmax is fp32.
    compile_backend: run each chunk compiled with this torch.compile backend (a compiled training step).
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    # ctx.needs_input_grad says True under torch.no_grad too: without this, validation would pay
    # for two more matmuls per chunk
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    chunk = compiled_chunk(compile_backend) if compile_backend else _chunk
    with torch.autocast(device_type, enabled=False):
        return _LinearCrossEntropy.apply(
            hidden, weight, targets, weights, float(z_loss), masked_column, compute_dtype, needs_grad, chunk
        )

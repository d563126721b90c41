"""Fused output head + weighted cross-entropy, computed in row chunks.

The plain path materialises the logits of every scored position ([N, V], e.g. 2,048 × 16,384),
upcasts them to fp32, writes a log-softmax of the same size, and in the backward pass fills and
reads tensors of that size again. Here each chunk of rows computes its logits, its fp32
log-sum-exp and CE, and at once the gradient of the loss with respect to its hidden states and
the head weight (the loss is a sum, so the gradient is known in the forward pass). The [N, V]
tensors never exist; the numbers are the same as the plain path's (bf16 logits under bf16
autocast, softmax in fp32, gradients cast to the matmul dtype), which a test checks.
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 22  # logits per chunk (16 MB in fp32): large matmuls, small temporaries


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, weights, z_loss, masked_column, compute_dtype, needs_grad):
        h = hidden.to(compute_dtype)
        w_mat = weight.to(compute_dtype)
        grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device) if needs_grad else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs_grad else None
        ce = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        step = max(1, CHUNK_ELEMENTS // weight.shape[0])
        rows = torch.arange(min(step, h.shape[0]), device=h.device)
        probs = torch.empty(min(step, h.shape[0]), weight.shape[0], dtype=compute_dtype, device=h.device)
        for start in range(0, h.shape[0], step):
            end = min(start + step, h.shape[0])
            h_c, t_c, wt_c, r = h[start:end], targets[start:end], weights[start:end].float(), rows[: end - start]
            logits = h_c @ w_mat.t()
            if masked_column is not None:
                logits[:, masked_column] = float("-inf")
            logp = torch.log_softmax(logits, -1, dtype=torch.float32)  # one pass, fp32 whatever the matmul dtype
            logp_t = logp[r, t_c]
            ce[start:end] = -logp_t
            loss += (wt_c * -logp_t).sum()
            if z_loss:
                lse = logits[r, t_c].float() - logp_t
                loss += z_loss * (wt_c * lse.pow(2)).sum()
            if needs_grad:
                # d loss / d logits = s * softmax - w * onehot(t), with s = w * (1 + 2 z lse).
                # The softmax goes to the matmul dtype; the target column, where p - 1 would lose
                # its digits in bf16, is applied separately in fp32.
                scale = wt_c * (1 + 2 * z_loss * lse) if z_loss else wt_c
                g = torch.exp(logp, out=probs[: end - start])
                g[r, t_c] = 0
                coef_t = scale * logp_t.exp() - wt_c
                grad_h[start:end] = (g @ w_mat).float().mul_(scale[:, None]).add_(coef_t[:, None] * w_mat[t_c].float())
                grad_w += g.t() @ (h_c.float() * scale[:, None]).to(compute_dtype)  # summed in fp32 over chunks
                grad_w.index_add_(0, t_c, coef_t[:, None] * h_c.float())
        if needs_grad:
            ctx.save_for_backward(grad_h, grad_w)
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        ctx.mark_non_differentiable(ce)
        return loss, ce

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce):
        grad_h, grad_w = ctx.saved_tensors
        return (
            (grad_h * grad_loss).to(ctx.hidden_dtype),
            (grad_w * grad_loss).to(ctx.weight_dtype),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(hidden, weight, targets, weights, z_loss: float = 0.0, masked_column: int | None = None):
    """(sum_i weights_i * CE(hidden_i @ weight.T, targets_i) [+ z-loss], CE per row, detached).

    Under autocast the matmuls run in its dtype (as `F.linear` would); the softmax is fp32.
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    # ctx.needs_input_grad says True under torch.no_grad too: without this, validation would pay
    # for two more matmuls per chunk
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    with torch.autocast(device_type, enabled=False):
        return _LinearCrossEntropy.apply(
            hidden, weight, targets, weights, float(z_loss), masked_column, compute_dtype, needs_grad
        )

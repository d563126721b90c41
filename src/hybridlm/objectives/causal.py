"""Next-token prediction: position i sees tokens 0..i and predicts token i+1.

With mtp_heads = N > 1 (Gloeckle et al. 2024) extra heads also predict tokens i+2..i+N, each
with its own mean CE scaled by its weight in mtp_weights (default 1 each); validation, bits per
byte, scoring and generation read the next-token head alone.
"""

import torch

from hybridlm.errors import UserError
from hybridlm.objectives.base import SPECIAL, Batch, Objective


class CausalObjective(Objective):
    name = "causal"
    config_keys = ("mtp_heads", "mtp_weights")
    attention = "causal"
    likelihood = "exact"
    scorers = ("causal",)
    perplexity_scorers = ("causal",)
    generation = "causal"
    export_causal_lm = True

    def __init__(self, vocab_size, mtp_heads=1, mtp_weights=(), **kw):
        super().__init__(vocab_size, **kw)
        self.mtp_heads = mtp_heads
        self.mtp_weights = [_weight(w) for w in mtp_weights] or [1.0] * (mtp_heads - 1)

    @classmethod
    def check_config(cls, cfg):
        if not 1 <= cfg.mtp_heads <= 16:
            raise UserError(f"mtp_heads must lie in 1..16 (got {cfg.mtp_heads})")
        if cfg.mtp_weights and (len(cfg.mtp_weights) != cfg.mtp_heads - 1 or not all(_weight(w) >= 0 for w in cfg.mtp_weights)):
            raise UserError(f"mtp_weights needs one weight >= 0 per extra head ({cfg.mtp_heads - 1}; got {cfg.mtp_weights})")

    def corrupt(self, ids, generator, progress=1.0, train=True) -> Batch:
        inputs, targets = ids[:, :-1], ids[:, 1:]
        valid = targets != SPECIAL["pad"]
        w = valid.float()
        batch = Batch(
            input_ids=inputs,
            targets=targets,
            loss_weights=w / w.sum().clamp(min=1),
            is_causal=torch.ones(len(ids), dtype=torch.bool),
            token_mask=valid,
            document_ids=self._doc_ids(inputs),
        )
        if self.mtp_heads > 1:
            # head k predicts token i+k at position i, where the window still holds it
            B, L = inputs.shape
            pad = torch.full((B, self.mtp_heads), SPECIAL["pad"], dtype=ids.dtype)
            longer = torch.cat([ids, pad], 1)
            extra = torch.stack([longer[:, k : k + L] for k in range(2, self.mtp_heads + 1)], -1)
            ok = (extra != SPECIAL["pad"]).float()
            weights = ok / ok.sum((0, 1), keepdim=True).clamp(min=1) * torch.tensor(self.mtp_weights, dtype=torch.float32)
            batch.extra_targets, batch.extra_weights = extra, weights
        return batch


def _weight(value) -> float:
    """A loss weight from a config file (a number) or a repeated flag (text); -1 when it is neither."""
    try:
        return -1.0 if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return -1.0

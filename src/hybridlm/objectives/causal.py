"""Next-token prediction: position i sees tokens 0..i and predicts token i+1.

With mtp_heads = N > 1 (Gloeckle et al. 2024) extra heads also predict tokens i+2..i+N, each
with its own mean CE scaled by its weight in mtp_weights (default 1 each); validation, bits per
byte, scoring and generation read the next-token head alone.
"""

from dataclasses import dataclass

import torch

from hybridlm.errors import UserError
from hybridlm.objectives.base import SPECIAL, Batch, Objective, Options, in_range, mean_weights, option
from hybridlm.objectives.capabilities import CAUSAL_LM, Attention, Capabilities, Generation, Likelihood


@dataclass(frozen=True)
class CausalOptions(Options):
    mtp_heads: int = option(1, "output heads in all: N-1 extra heads predict t+2..t+N (causal rows)", *in_range(1, 16))
    mtp_weights: list = option([], "repeatable: the loss weight of each extra head (default 1 each)")

    def check_together(self):
        if self.mtp_weights and (
            len(self.mtp_weights) != self.mtp_heads - 1 or not all(_weight(w) >= 0 for w in self.mtp_weights)
        ):
            raise UserError(
                f"mtp_weights needs one weight >= 0 per extra head ({self.mtp_heads - 1}; got {self.mtp_weights})"
            )

    def head_weights(self) -> list[float]:
        return [_weight(w) for w in self.mtp_weights] or [1.0] * (self.mtp_heads - 1)


class CausalObjective(Objective):
    name = "causal"
    Options = CausalOptions
    capabilities = Capabilities(Attention.CAUSAL, Likelihood.EXACT, ("causal",), Generation.CAUSAL, export=CAUSAL_LM)

    def corrupt(self, ids, generator, fraction_done=1.0, train=True) -> Batch:
        inputs, targets = ids[:, :-1], ids[:, 1:]
        valid = targets != SPECIAL["pad"]
        batch = Batch(
            input_ids=inputs,
            targets=targets,
            loss_weights=mean_weights(valid),
            token_mask=valid,
            attention=self.attention_of(inputs, causal=True),
        )
        heads = self.options.mtp_heads
        if heads > 1:
            # head k predicts token i+k at position i, where the window still holds it
            B, L = inputs.shape
            pad = torch.full((B, heads), SPECIAL["pad"], dtype=ids.dtype)
            longer = torch.cat([ids, pad], 1)
            extra = torch.stack([longer[:, k : k + L] for k in range(2, heads + 1)], -1)
            ok = (extra != SPECIAL["pad"]).float()
            scale = torch.tensor(self.options.head_weights(), dtype=torch.float32)
            batch.extra_targets, batch.extra_weights = extra, ok / ok.sum((0, 1), keepdim=True).clamp(min=1) * scale
        return batch


def _weight(value) -> float:
    """A loss weight from a config file (a number) or a repeated flag (text); -1 when it is neither."""
    try:
        return -1.0 if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return -1.0

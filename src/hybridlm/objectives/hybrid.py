"""GPT-BERT: masked next-token prediction (MNTP) mixed with causal LM, per sequence.

Both modes shift: inputs x[:-1], targets x[1:], so position i always predicts token i+1 and one
head serves both. Masked rows see a span-masked x with bidirectional attention and are scored
only where the *next* token was masked; causal rows are plain next-token prediction. Each step
draws round(B * causal_fraction) causal rows (stochastic rounding), so any mix works on any
number of devices. The loss weights reproduce GPT-BERT's: each mode's mean CE, weighted by its
share of the rows. One model, two readings: validation reports both, the causal one is a
likelihood (bits per byte), and it exports as a causal LM plus a masked-LM view.
"""

import math

import torch

from hybridlm.errors import UserError
from hybridlm.objectives.base import SPECIAL, Batch, Objective
from hybridlm.objectives.masked import check_span_options, mask_rate, span_mask


class HybridObjective(Objective):
    name = "hybrid"
    config_keys = ("mask_ratio_start", "mask_ratio_end", "max_span", "causal_fraction")
    attention = "mixed"
    likelihood = "exact"  # of the causal reading (likelihood_view)
    likelihood_view = "causal"
    loss_label = "causal + MNTP CE"
    scorers = ("mntp", "mntp-word", "causal", "fused")
    perplexity_scorers = ("causal", "mntp")
    generation = "causal"
    infill_shift = 1
    export_causal_lm = True
    export_masked_lm = "masked_lm"

    def __init__(self, vocab_size, causal_fraction=1 / 16, mask_ratio_start=0.3, mask_ratio_end=0.15, max_span=3, **kw):
        super().__init__(vocab_size, **kw)
        self.causal_fraction = causal_fraction
        self.mask_ratio_start, self.mask_ratio_end, self.max_span = mask_ratio_start, mask_ratio_end, max_span

    @classmethod
    def check_config(cls, cfg):
        check_span_options(cfg)
        if not 0 <= cfg.causal_fraction <= 1:
            raise UserError(f"causal_fraction must lie in [0, 1] (got {cfg.causal_fraction})")

    def validation_views(self):
        def view(fraction):
            return HybridObjective(self.vocab_size, fraction, self.mask_ratio_start, self.mask_ratio_end, self.max_span,
                                   document_mask=self.document_mask, z_loss=self.z_loss)

        f = self.causal_fraction
        return {"causal": (view(1.0), f), "masked": (view(0.0), 1 - f)}

    def corrupt(self, ids, generator, progress=1.0, train=True) -> Batch:
        B = len(ids)
        expected = B * self.causal_fraction
        n_causal = int(math.floor(expected + torch.rand((), generator=generator).item()))
        is_causal = torch.zeros(B, dtype=torch.bool)
        is_causal[torch.randperm(B, generator=generator)[:n_causal]] = True

        rate = mask_rate(progress, self.mask_ratio_start, self.mask_ratio_end) if train else self.mask_ratio_end
        corrupted, mask = span_mask(ids, rate, generator, self.max_span, vocab_size=self.vocab_size)
        corrupted = torch.where(is_causal[:, None], ids, corrupted)
        inputs, targets = corrupted[:, :-1], ids[:, 1:]
        masked = mask[:, 1:] & ~is_causal[:, None]
        causal = (targets != SPECIAL["pad"]) & is_causal[:, None]
        masked_w, causal_w = masked.float(), causal.float()
        # mode share of the rows / tokens scored in that mode = GPT-BERT's per-GPU means, averaged
        w = causal_w * (n_causal / B) / causal_w.sum().clamp(min=1) + masked_w * ((B - n_causal) / B) / masked_w.sum().clamp(min=1)
        return Batch(input_ids=inputs, targets=targets, loss_weights=w, is_causal=is_causal, token_mask=causal | masked,
                     document_ids=self._doc_ids(ids[:, :-1]))

"""GPT-BERT's masked next-token prediction (MNTP) on its own: the masked half of the hybrid.

Inputs x[:-1] span-masked (80/10/10), bidirectional attention, and position i predicts token
i+1 where that token was masked: the same shift as next-token prediction, so one head serves
both readings when MNTP is mixed with causal rows (`hybrid`, or `mix = "causal:1,mntp:15"`).
"""

import torch

from hybridlm.objectives.base import Batch, Objective
from hybridlm.objectives.masked import check_span_options, mask_rate, span_mask


class MntpObjective(Objective):
    name = "mntp"
    config_keys = ("mask_ratio_start", "mask_ratio_end", "max_span")
    attention = "bidirectional"
    likelihood = None  # a pseudo-likelihood reading, not a likelihood of the text
    loss_label = "MNTP CE"
    scorers = ("mntp", "mntp-word")
    perplexity_scorers = ("mntp",)
    generation = None
    infill_shift = 1
    export_causal_lm = False
    export_masked_lm = ""

    def __init__(self, vocab_size, mask_ratio_start=0.3, mask_ratio_end=0.15, max_span=3, **kw):
        super().__init__(vocab_size, **kw)
        self.mask_ratio_start, self.mask_ratio_end, self.max_span = mask_ratio_start, mask_ratio_end, max_span

    @classmethod
    def check_config(cls, cfg):
        check_span_options(cfg)

    def corrupt(self, ids, generator, progress=1.0, train=True) -> Batch:
        rate = mask_rate(progress, self.mask_ratio_start, self.mask_ratio_end) if train else self.mask_ratio_end
        corrupted, mask = span_mask(ids, rate, generator, self.max_span, vocab_size=self.vocab_size)
        masked = mask[:, 1:]  # position i is scored where token i+1 was masked
        w = masked.float()
        return Batch(input_ids=corrupted[:, :-1], targets=ids[:, 1:], loss_weights=w / w.sum().clamp(min=1),
                     is_causal=torch.zeros(len(ids), dtype=torch.bool), token_mask=masked,
                     document_ids=self._doc_ids(ids[:, :-1]))

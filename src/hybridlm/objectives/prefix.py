"""Prefix LM (T5's prefix LM, UL2's S-denoiser): bidirectional attention over a prefix of random
length, next-token prediction on the rest.

Per row a prefix length p is drawn uniformly from [prefix_min, prefix_max] of the row; positions
0..p-1 see each other whatever their order, later ones see the past (the model reads the mode from
the batch's `prefix_lengths`, not from the objective). Position i predicts token i+1 for i >= p-1:
the continuation given the whole prefix; inside the prefix there is no loss (its tokens are seen).
With an empty prefix the model is a causal LM, which is how validation reports bits per byte
(`val_ce_causal`) and how sentences are scored; the `prefix` scorer conditions a completion on its
context as a bidirectional prefix (EWoK, entity tracking).
"""

import torch

from hybridlm.errors import UserError
from hybridlm.objectives.base import SPECIAL, Batch, Objective


class PrefixObjective(Objective):
    name = "prefix"
    config_keys = ("prefix_min", "prefix_max")
    attention = "causal"  # causal after the prefix: a classifier reads the last token
    likelihood = "exact"  # of the empty-prefix (causal) reading
    likelihood_view = "causal"
    loss_label = "continuation CE"
    scorers = ("causal", "prefix")
    perplexity_scorers = ("causal",)
    generation = "causal"
    prompt_as_prefix = True  # the prompt is the prefix: read bidirectionally, then left to right (KV cache)
    export_causal_lm = True  # a Llama sees the prompt causally: the empty-prefix reading

    def __init__(self, vocab_size, prefix_min=0.1, prefix_max=0.9, **kw):
        super().__init__(vocab_size, **kw)
        self.prefix_min, self.prefix_max = prefix_min, prefix_max

    @classmethod
    def check_config(cls, cfg):
        if not 0 <= cfg.prefix_min <= cfg.prefix_max < 1:
            raise UserError(f"prefix_min and prefix_max must satisfy 0 <= min <= max < 1 (got {cfg.prefix_min}, {cfg.prefix_max})")

    def corrupt(self, ids, generator, progress=1.0, train=True) -> Batch:
        inputs, targets = ids[:, :-1], ids[:, 1:]
        B, L = inputs.shape
        lo, hi = round(self.prefix_min * L), round(self.prefix_max * L)
        prefix = torch.randint(lo, hi + 1, (B,), generator=generator)
        scored = (torch.arange(L)[None] >= prefix[:, None] - 1) & (targets != SPECIAL["pad"])
        w = scored.float()
        return Batch(input_ids=inputs, targets=targets, loss_weights=w / w.sum().clamp(min=1),
                     is_causal=torch.ones(B, dtype=torch.bool), token_mask=scored, document_ids=self._doc_ids(inputs),
                     prefix_lengths=prefix)

    def validation_views(self):
        causal = PrefixObjective(self.vocab_size, 0.0, 0.0, document_mask=self.document_mask, z_loss=self.z_loss)
        return {"prefix": (self, 1.0), "causal": (causal, 0.0)}

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

from dataclasses import dataclass

import torch

from hybridlm.errors import UserError
from hybridlm.objectives.base import SPECIAL, Batch, Objective, Options, mean_weights, option
from hybridlm.objectives.capabilities import CAUSAL_LM, Attention, Capabilities, Generation, Infill, Likelihood


@dataclass(frozen=True)
class PrefixOptions(Options):
    prefix_min: float = option(0.1, "prefix LM: the shortest prefix, as a fraction of the row")
    prefix_max: float = option(0.9, "prefix LM: the longest prefix, as a fraction of the row")

    def check_together(self):
        if not 0 <= self.prefix_min <= self.prefix_max < 1:
            raise UserError(
                f"prefix_min and prefix_max must satisfy 0 <= min <= max < 1 (got {self.prefix_min}, {self.prefix_max})"
            )


class PrefixObjective(Objective):
    name = "prefix"
    Options = PrefixOptions
    # causal after the prefix (a classifier reads the last token); the likelihood is the empty-prefix
    # (causal) reading's, which is also what a Llama export sees; generation reads the prompt as the
    # prefix (bidirectionally), then left to right with a KV cache
    capabilities = Capabilities(Attention.CAUSAL, Likelihood.EXACT, ("causal", "prefix"), Generation.CAUSAL,
                                Infill.NONE, CAUSAL_LM, "continuation CE", likelihood_view="causal",
                                prompt_as_prefix=True)  # fmt: skip

    def corrupt(self, ids, generator, fraction_done=1.0, train=True) -> Batch:
        inputs, targets = ids[:, :-1], ids[:, 1:]
        B, L = inputs.shape
        lo, hi = round(self.options.prefix_min * L), round(self.options.prefix_max * L)
        prefix = torch.randint(lo, hi + 1, (B,), generator=generator)
        scored = (torch.arange(L)[None] >= prefix[:, None] - 1) & (targets != SPECIAL["pad"])
        return Batch(
            input_ids=inputs,
            targets=targets,
            loss_weights=mean_weights(scored),
            token_mask=scored,
            attention=self.attention_of(inputs, causal=True, prefix_lengths=prefix),
        )

    def validation_views(self):
        causal = PrefixObjective(self.vocab_size, PrefixOptions(0.0, 0.0), document_mask=self.document_mask)
        return {"prefix": (self, 1.0), "causal": (causal, 0.0)}

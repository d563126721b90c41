"""Next-token prediction: position i sees tokens 0..i and predicts token i+1."""

import torch

from hybridlm.objectives.base import SPECIAL, Batch, Objective


class CausalObjective(Objective):
    name = "causal"
    attention = "causal"
    likelihood = "exact"
    scorers = ("causal",)
    perplexity_scorers = ("causal",)
    generation = "causal"
    export_causal_lm = True

    def corrupt(self, ids, generator, progress=1.0, train=True) -> Batch:
        inputs, targets = ids[:, :-1], ids[:, 1:]
        valid = targets != SPECIAL["pad"]
        w = valid.float()
        return Batch(
            input_ids=inputs,
            targets=targets,
            loss_weights=w / w.sum().clamp(min=1),
            is_causal=torch.ones(len(ids), dtype=torch.bool),
            token_mask=valid,
            document_ids=self._doc_ids(inputs),
        )

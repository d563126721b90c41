"""GPT-BERT's masked next-token prediction (MNTP) on its own: the masked half of the hybrid.

The masked LM's span masking (80/10/10, ratio annealed 30% -> 15%), read one position earlier:
inputs x[:-1] with bidirectional attention, and position i predicts token i+1 where that token was
masked — the same shift as next-token prediction, so one head serves both readings when MNTP is
mixed with causal rows (`hybrid`, or `mix = "causal:1,mntp:15"`).
"""

from hybridlm.objectives.base import Batch, mean_weights
from hybridlm.objectives.capabilities import Infill
from hybridlm.objectives.masked import MaskedObjective


class MntpObjective(MaskedObjective):
    name = "mntp"
    capabilities = MaskedObjective.capabilities.with_(
        loss_label="MNTP CE", scorers=("mntp", "mntp-word"), perplexity_scorers=("mntp",), infill=Infill.NEXT_TOKEN
    )

    def corrupt(self, ids, generator, fraction_done=1.0, train=True) -> Batch:
        corrupted, mask = self.options.mask(ids, fraction_done, train, generator, self.vocab_size, self.begins_word)
        masked = mask[:, 1:]  # position i is scored where token i+1 was masked
        return Batch(
            input_ids=corrupted[:, :-1],
            targets=ids[:, 1:],
            loss_weights=mean_weights(masked),
            token_mask=masked,
            attention=self.attention_of(ids[:, :-1], causal=False),
        )

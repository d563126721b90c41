"""GPT-BERT: masked next-token prediction (MNTP) mixed with causal LM, per sequence.

A named preset of `mix`: `hybrid` with causal_fraction f is `mix = "causal:f,mntp:1-f"`, the same
rows, masks and losses for the same seed. Both modes shift: inputs x[:-1], targets x[1:], so
position i always predicts token i+1 and one head serves both. Masked rows see a span-masked x
with bidirectional attention and are scored only where the *next* token was masked; causal rows
are plain next-token prediction. Each step draws round(B * causal_fraction) causal rows
(stochastic rounding), and the loss is each mode's mean CE weighted by its share of the rows
(GPT-BERT's). One model, two readings: validation reports both (val_ce_causal, val_ce_masked),
the causal one is a likelihood (bits per byte), and it exports as a causal LM plus a masked-LM view.
"""

from hybridlm.errors import UserError
from hybridlm.objectives.causal import CausalObjective
from hybridlm.objectives.masked import check_span_options
from hybridlm.objectives.mix import MixObjective
from hybridlm.objectives.mntp import MntpObjective


class HybridObjective(MixObjective):
    name = "hybrid"
    config_keys = ("mask_ratio_start", "mask_ratio_end", "max_span", "causal_fraction")
    derive_from_components = False
    demo_config = {}
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
    forbid_mask_prediction = False

    def __init__(self, vocab_size, causal_fraction=1 / 16, mask_ratio_start=0.3, mask_ratio_end=0.15, max_span=3, **kw):
        components = {"causal": CausalObjective(vocab_size, **kw),
                      "mntp": MntpObjective(vocab_size, mask_ratio_start, mask_ratio_end, max_span, **kw)}
        super().__init__(vocab_size, components, {"causal": causal_fraction, "mntp": 1 - causal_fraction},
                         labels={"mntp": "masked"}, **kw)
        self.causal_fraction = causal_fraction

    @classmethod
    def identity_keys(cls, cfg):
        return cls.config_keys

    @classmethod
    def check_config(cls, cfg):
        check_span_options(cfg)
        if not 0 <= cfg.causal_fraction <= 1:
            raise UserError(f"causal_fraction must lie in [0, 1] (got {cfg.causal_fraction})")

    @classmethod
    def from_config(cls, cfg, vocab_size, data_dir=None):
        return cls(vocab_size, document_mask=cfg.document_mask, z_loss=cfg.z_loss, **{k: getattr(cfg, k) for k in cls.config_keys})

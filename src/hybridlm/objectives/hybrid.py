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

from dataclasses import dataclass, fields

from hybridlm.objectives.base import in_range, option
from hybridlm.objectives.causal import CausalObjective
from hybridlm.objectives.masked import SpanMaskingOptions, word_starts_for
from hybridlm.objectives.mix import MixObjective, mix_capabilities
from hybridlm.objectives.mntp import MntpObjective


@dataclass(frozen=True)
class HybridOptions(SpanMaskingOptions):
    causal_fraction: float = option(
        1 / 16, "hybrid: the share of rows trained causally (GPT-BERT: 1/16)", *in_range(0, 1)
    )


class HybridObjective(MixObjective):
    name = "hybrid"
    Options = HybridOptions
    # the mix's record, with the masked reading's scorers first whatever the shares, and causal
    # perplexity first (the likelihood)
    capabilities = mix_capabilities(
        [("masked", MntpObjective.capabilities), ("causal", CausalObjective.capabilities)],
        loss_label="causal + MNTP CE",
    ).with_(perplexity_scorers=("causal", "mntp"))
    demo_config = {}

    def __init__(
        self, vocab_size, options: HybridOptions | None = None, document_mask: bool = True, begins_word=None, **values
    ):
        options = (options if options is not None else HybridOptions()).with_values(**values)
        span = SpanMaskingOptions(**{f.name: getattr(options, f.name) for f in fields(SpanMaskingOptions)})
        kw = {"document_mask": document_mask}
        mntp = MntpObjective(vocab_size, span, begins_word=begins_word, **kw)
        components = {"causal": CausalObjective(vocab_size, **kw), "mntp": mntp}
        f = options.causal_fraction
        super().__init__(
            vocab_size, components, {"causal": f, "mntp": 1 - f}, labels={"mntp": "masked"}, options=options, **kw
        )

    @classmethod
    def component_names(cls, options):
        return []  # its components are built from its own options

    @classmethod
    def from_config(cls, cfg, vocab_size, data_dir=None):
        options = cls.read_options(cfg.options)
        begins = word_starts_for(options, data_dir)
        return cls(vocab_size, options, document_mask=cfg.document_mask, begins_word=begins)

"""What the rest of the package may ask an objective, as one frozen record of enums."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from hybridlm.errors import UserError


class Attention(enum.Enum):
    CAUSAL = "causal"
    BIDIRECTIONAL = "bidirectional"
    MIXED = "mixed"  # per row
    BLOCK = "block"  # bidirectional within a block, causal across blocks (block diffusion)


class Likelihood(enum.Enum):
    EXACT = "exact"  # the validation loss is a likelihood: bits per byte
    BOUND = "bound"  # an upper bound on the NLL (a NELBO): bits per byte, labelled as a bound
    NONE = "none"  # a pseudo-likelihood: no bits per byte


class Generation(enum.Enum):
    NONE = "none"
    CAUSAL = "causal"  # left to right, with a KV cache
    UNMASK = "unmask"  # iterative unmasking of the whole answer (semi-autoregressive by --block-length if asked)
    BLOCKS = "blocks"  # block by block, each unmasked with the previous blocks' keys and values cached
    # left to right by <mask> tokens after the text ("BERTs are generative in-context learners"): one of them
    # revealed each call (read where the objective reads a <mask>: Infill); bidirectional, so a cache is approximate
    MASKS = "masked"
    # the reverse process of a noise that is not only masking (GIDD, uniform-state): every position of the answer
    # is redrawn each round from p(z_s | z_t) (the objective's `prior` and `posterior`)
    DENOISE = "denoise"


class Infill(enum.Enum):
    """Where position i's prediction of a <mask> is read."""

    NONE = None  # cannot infill
    IN_PLACE = 0  # at i (BERT, diffusion)
    NEXT_TOKEN = 1  # at i-1 (GPT-BERT's masked next-token form)

    @property
    def shift(self) -> int | None:
        return self.value


class ExportView(enum.Enum):
    CAUSAL_LM = "causal_lm"  # a LlamaForCausalLM
    MASKED_LM = "masked_lm"  # a masked LM (the export's root, or a sub-folder beside a causal LM)


CAUSAL_LM = frozenset({ExportView.CAUSAL_LM})
MASKED_LM = frozenset({ExportView.MASKED_LM})


@dataclass(frozen=True)
class Capabilities:
    """Everything the rest of the package asks an objective, as one record."""

    attention: Attention = Attention.CAUSAL
    likelihood: Likelihood = Likelihood.NONE
    scorers: tuple[str, ...] = ("causal",)  # sentence scorers (evaluate.scoring.SCORERS); the first is the default
    generation: Generation = Generation.NONE  # how it generates by default
    infill: Infill = Infill.NONE
    export: frozenset = frozenset()  # of ExportView
    loss_label: str = "CE (nats/token)"  # what the validation loss measures, for tables
    perplexity_scorers: tuple[str, ...] = ()  # what `hlm eval perplexity` reports by default (): the first scorer
    likelihood_view: str = ""  # the validation view whose loss `likelihood` describes
    prompt_as_prefix: bool = False  # causal generation reads the prompt bidirectionally (prefix LM)
    forbid_mask_prediction: bool = False  # MDLM's SUBS: the <mask> token is never a prediction
    also_generates: tuple[Generation, ...] = ()  # other ways it generates (--view), e.g. the hybrid's masked one

    def __post_init__(self):
        if not self.perplexity_scorers:
            object.__setattr__(self, "perplexity_scorers", self.scorers[:1])

    @property
    def masked_lm_folder(self) -> str | None:
        """Where the masked-LM view is exported: None (not at all), "" (the root) or "masked_lm"."""
        if ExportView.MASKED_LM not in self.export:
            return None
        return "masked_lm" if ExportView.CAUSAL_LM in self.export else ""

    @property
    def generations(self) -> tuple[Generation, ...]:
        """Every way this model generates, its default first."""
        return () if self.generation is Generation.NONE else (self.generation, *self.also_generates)

    def generation_for(self, view: str, name: str) -> Generation:
        """The way of generating a --view asks for ("" the default), refused in one line where there is none."""
        if not view:
            return self.generation
        if Generation(view) not in self.generations:
            have = ", ".join(g.value for g in self.generations) or "none: it does not generate"
            raise UserError(f"a {name} model does not generate by --view {view} (its views: {have})")
        return Generation(view)

    def with_(self, **changes) -> Capabilities:
        return replace(self, **changes)

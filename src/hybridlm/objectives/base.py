"""What every objective shares: the corrupted `Batch`, the `Options` and `Capabilities` records, and
the `Objective` interface.

An objective is one class in one file. It turns clean windows of L+1 token ids into a Batch
(inputs, targets, attention, per-token loss weights); its options are a dataclass in the same file
(`Options`: defaults, help, checks), from which the CLI flags, config keys, the resume check and
export metadata are made; what the rest of the package may ask of it is one frozen record
(`capabilities`: scorers, generation, infilling, export views, what its loss is), and what
scoring, perplexity and generation need of its structure is the interface below, answered by every
objective (`scoring_attention`, `block_size`/`block_ids`, and the bound: `bound()`, `bound_shift`,
`bound_times`, `time_mask`, `subset_masks`, `block_subsets`). Nothing outside `objectives/` switches
on an objective's name or probes it for members. The loss is not the objective's: the training loss
(hybridlm.losses) reads the batch it makes.

The loss weights are normalised over the *global* batch, so the batch loss is simply
sum(weight * CE): any split of the rows into micro-batches or processes sums to the same loss
and the same gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import torch

from hybridlm.errors import UserError
from hybridlm.model import AttentionSpec
from hybridlm.objectives.capabilities import CAUSAL_LM, Capabilities, Generation, Likelihood
from hybridlm.tokenizer import special_ids

SPECIAL = special_ids()


# ---------------------------------------------------------------- the batch
@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] long — what the model sees
    targets: torch.Tensor  # [B, L] long — token to predict at each position
    loss_weights: torch.Tensor  # [B, L] float — 0 where there is no loss; sums to the batch loss
    # [B, L] bool — the targets whose likelihood the loss is a per-token average of (bits per byte
    # counts their UTF-8 bytes); for a bound (diffusion) every token the bound covers
    token_mask: torch.Tensor
    attention: AttentionSpec  # modes per row, packed documents, prefixes
    # multi-token prediction: [B, L, H] the tokens t+2.. each extra head predicts, and their loss weights
    extra_targets: torch.Tensor | None = None
    extra_weights: torch.Tensor | None = None
    # [B, L, K] what an objective's own loss term reads per position beside the batch (GIDD: the noise's shares)
    noise: torch.Tensor | None = None
    # [B, L, V] distributions the model reads in place of input_ids (Duo's curriculum: a tempered softmax of the
    # Gaussian latent whose argmax is input_ids)
    soft_inputs: torch.Tensor | None = None
    # flat indices of the positions with a loss (weight > 0), found on the host by `prepared` so that
    # the device never waits for a data-dependent shape (boolean indexing syncs a GPU with its host)
    scored: torch.Tensor | None = None

    def _map(self, fn, scored=None, rows: bool = False) -> Batch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        out = {
            k: fn(v) if isinstance(v, torch.Tensor) else v
            for k, v in values.items()
            if k not in ("attention", "scored")
        }
        return Batch(**out, attention=self.attention.map(fn, rows=rows), scored=scored)

    def rows(self, sl: slice) -> Batch:
        """Rows `sl` (host batches: `scored` is found again by `prepared`)."""
        return self._map(lambda x: x[sl], rows=True)

    def prepared(self) -> Batch:
        """The batch with what the device should not have to find out computed here, on the host:
        `scored`, and the attention simplified (see AttentionSpec.simplify)."""
        return replace(self, attention=self.attention.simplify(), scored=scored_positions(self.loss_weights))

    def to(self, device, non_blocking: bool = False) -> Batch:
        """The batch's tensors on `device`. On CUDA host tensors are pinned first, so non_blocking
        copies overlap compute."""
        pin = non_blocking and torch.device(device).type == "cuda"

        def move(x):
            return (x.pin_memory() if pin and x.device.type == "cpu" else x).to(device, non_blocking=non_blocking)

        return self._map(move, scored=None if self.scored is None else move(self.scored))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def scored_positions(loss_weights: torch.Tensor) -> torch.Tensor:
    """Flat indices (into [B * L]) of the positions with a loss."""
    return (loss_weights > 0).reshape(-1).nonzero().squeeze(1)


def mean_weights(counted: torch.Tensor) -> torch.Tensor:
    """Loss weights of a per-token mean over the `counted` positions of the whole batch."""
    w = counted.float()
    return w / w.sum().clamp(min=1)


def rows_in_mode(n: int, causal: bool) -> torch.Tensor:
    return torch.full((n,), causal, dtype=torch.bool)


def maskable(ids: torch.Tensor) -> torch.Tensor:
    """Special tokens (<pad>, <s>, </s>, <mask>, <unk>) are never corrupted."""
    return ids >= len(SPECIAL)


# ---------------------------------------------------------------- options
def option(default, help: str, check: Callable[[Any], bool] | None = None, rule: str = ""):
    """A field of an objective's Options: its default, the --help text, and a check of its value
    (`rule` says what the check requires, for the one-line error)."""
    kw = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(metadata={"help": help, "check": check, "rule": rule}, **kw)


def in_range(lo, hi, lo_open=False, hi_open=False) -> tuple[Callable[[Any], bool], str]:
    """(check, rule) for a number in [lo, hi] (open ends where asked)."""

    def check(v):
        return (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)

    rule = f"lie in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return check, rule


def one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), f"be one of: {', '.join(choices)}"


@dataclass(frozen=True)
class Options:
    """An objective's options. Subclasses add fields made with `option(...)`; each field is a CLI flag
    (--mask-ratio-start) and a config key (mask_ratio_start) of `hlm train`. Objectives may share a
    key (masked, mntp and hybrid all read mask_ratio_start): it is one key, with one default."""

    @classmethod
    def from_values(cls, values: dict) -> Options:
        """The options from config values (keys of other objectives are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def check(self) -> None:
        """Raise UserError for a value this objective cannot use: the one place options are validated."""
        for f in fields(self):
            value, check = getattr(self, f.name), f.metadata.get("check")
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{f.name} must be a finite number (got {value})")
            if check is not None and not check(value):
                raise UserError(f"{f.name} must {f.metadata['rule']} (got {value!r})")
        self.check_together()

    def check_together(self) -> None:
        """Checks that involve several options (override)."""

    def check_window(self, seq_len: int, batch_size: int) -> None:
        """Checks against the training windows (override): e.g. a corruption that would leave whole batches with
        nothing to predict."""

    def with_values(self, **values) -> Options:
        """These options with `values` changed, checked (none given: these options)."""
        if not values:
            return self
        options = replace(self, **values)
        options.check()
        return options

    def values(self) -> dict:
        return asdict(self)


def option_default(f):
    return f.default_factory() if f.default is MISSING else f.default


# ---------------------------------------------------------------- the interface
@dataclass(frozen=True)
class NoOptions(Options):
    """An objective without options."""


class Objective:
    """The interface. Subclasses set `name`, `Options` and `capabilities`, and implement `corrupt`."""

    name: ClassVar[str] = "base"
    Options: ClassVar[type[Options]] = NoOptions
    capabilities: ClassVar[Capabilities] = Capabilities(generation=Generation.CAUSAL, export=CAUSAL_LM)
    demo_config: ClassVar[dict] = {}  # config keys the demo sets for this objective (e.g. the mix's ratios)
    # its rows are x_t ⊕ x_0 (block diffusion), twice the window: they share no batch with other
    # objectives' rows (a mix) and no teacher's forward pass (distillation)
    two_stream: ClassVar[bool] = False
    demo_sample_text: ClassVar[str] = (
        "the <mask> near the dogs <mask> ."  # infilled in the demo where it cannot generate
    )

    def __init__(self, vocab_size: int, options: Options | None = None, document_mask: bool = True, **values):
        """options: an Options record; or option values as keywords, e.g. DiffusionObjective(V, schedule="cosine")."""
        self.vocab_size = vocab_size
        self.options = (options if options is not None else self.Options()).with_values(**values)
        self.document_mask = document_mask

    # ------------------------------------------------------------ construction
    @classmethod
    def read_options(cls, values: dict) -> Options:
        """This objective's options from config values, checked."""
        options = cls.Options.from_values(values)
        options.check()
        return options

    @classmethod
    def identity(cls, values: dict) -> dict:
        """The option values that make a run of this objective what it is (refused on --resume when
        changed): all of its options."""
        return cls.Options.from_values(values).values()

    @classmethod
    def from_config(cls, cfg, vocab_size: int, data_dir=None) -> Objective:
        """The objective with the options of a TrainConfig (data_dir: for corpus statistics)."""
        return cls(vocab_size, cls.read_options(cfg.options), document_mask=cfg.document_mask)

    # ------------------------------------------------------------ training
    def corrupt(
        self, ids: torch.Tensor, generator: torch.Generator, fraction_done: float = 1.0, train: bool = True
    ) -> Batch:
        raise NotImplementedError

    def _doc_ids(self, inputs: torch.Tensor):
        return torch.cumsum((inputs == SPECIAL["bos"]).int(), -1) if self.document_mask else None

    def attention_of(self, inputs: torch.Tensor, causal: bool, prefix_lengths=None) -> AttentionSpec:
        """Every row in one mode, packed documents kept apart (when document_mask is on)."""
        return AttentionSpec(rows_in_mode(len(inputs), causal), self._doc_ids(inputs), prefix_lengths)

    @property
    def reads_soft_inputs(self) -> bool:
        """Whether its training batches may carry `soft_inputs` (Duo's curriculum), which no mix merges."""
        return False

    def loss_term(self, z_loss: float = 0.0):
        """The loss term that scores this objective's batches (hybridlm.losses): the weighted token CE, unless
        the objective's bound is another form (GIDD's KL)."""
        from hybridlm.losses import TokenCE

        return TokenCE(z_loss)

    # ------------------------------------------------------------ evaluation
    def validation_views(self) -> dict[str, tuple[Objective, float]]:
        """name -> (objective to validate with, its weight in val_loss). One view: the objective itself."""
        return {"": (self, 1.0)}

    def noise_level(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The noise level [B] a noise-conditioned model is told (ModelConfig.cond_dim); only diffusion has one."""
        raise UserError(f"the {self.name} objective has no noise level: only diffusion takes --time-conditioning")

    def condition(self, model) -> None:
        """Give a noise-conditioned model its noise level (every run's model is built beside its objective)."""
        if model.cfg.cond_dim:
            model.noise_of = self.noise_level

    # ------------------------------------------------------------ sampling
    def alpha(self, t: float) -> float:
        """The noise schedule iterative unmasking reverses: the probability that a token is still clean
        at time t in [0, 1]. Objectives without one use the log-linear schedule (alpha = 1 - t): an even
        number of tokens revealed per round."""
        return 1.0 - t

    # ------------------------------------------------------------ structure (what scoring and generation ask)
    @property
    def block_size(self) -> int:
        """Tokens per block when the model attends block by block (block diffusion); 0: no blocks."""
        return 0

    def block_ids(self, length: int) -> torch.Tensor | None:
        """The block of each of positions 0..length-1 (None: no block structure)."""
        return None

    def inference_attention(self, causal: bool, length: int) -> AttentionSpec:
        """How `length` tokens attend at inference, when a scorer reads copies or a sampler a canvas (`causal`:
        their mode): one mode for every row, or the objective's own rule (block diffusion: block by block).
        The scoring engine adds padding, prefixes and shared-prefix branches."""
        blocks = self.block_ids(length)
        return AttentionSpec(causal) if causal or blocks is None else AttentionSpec(False, block_ids=blocks)

    # ------------------------------------------------------------ the bound (objectives whose likelihood is one)
    def bound(self) -> Objective:
        """The objective whose diffusion bound the bound scorers and the unmasking schedule read: this one when its
        likelihood is a bound (a mix answers with its component); else a one-line UserError."""
        if self.capabilities.likelihood is Likelihood.BOUND:
            return self
        raise UserError(f"objective {self.name} has no diffusion bound: the elbo scorer needs a diffusion objective")

    @property
    def bound_shift(self) -> int:
        """Where the bound reads a masked token's prediction: at its position (0) or one before (1)."""
        return 0

    def bound_times(self, n: int, generator) -> torch.Tensor:
        """n times t for a Monte Carlo estimate of the bound (stratified)."""
        raise self._no_bound()

    def time_mask(self, ids: torch.Tensor, t: torch.Tensor, generator, can=None, per_token_schedule: bool = False):
        """(mask, weight) of the forward process at times t ([B]) over ids [B, L]: which positions are masked and
        each position's weight in the bound."""
        raise self._no_bound()

    def subset_masks(self, n: int, generator, samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The bound of n tokens by subset size: (masks [S, n] bool, weights [S])."""
        raise self._no_bound()

    def block_subsets(self, positions: list[int], generator, samples: int = 1) -> list[tuple]:
        """The bound of `positions` block by block: per block (its end, its positions, masks, weights)."""
        raise self._no_bound()

    def _no_bound(self) -> UserError:
        return UserError(f"objective {self.name} has no diffusion bound to score with")

"""What every objective shares: the corrupted `Batch`, the `Objective` interface and its loss.

An objective is one class in one file. It turns clean windows of L+1 token ids into a Batch
(inputs, targets, attention mode per row, per-token loss weights) and answers every question the
rest of the package asks about it: its options (read from the training config by the class
itself), its validation views, whether its loss is a likelihood or a bound (so bits per byte is
reported only where it means something), its sentence scorers, how it generates, how it exports
and how the demo shows it. Nothing outside `objectives/` switches on an objective's name.

The loss weights are normalised over the *global* batch, so the batch loss is simply
sum(weight * CE): any split of the rows into micro-batches or processes sums to the same loss
and the same gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from hybridlm.ops import linear_cross_entropy
from hybridlm.tokenizer import special_ids

SPECIAL = special_ids()


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] long — what the model sees
    targets: torch.Tensor  # [B, L] long — token to predict at each position
    loss_weights: torch.Tensor  # [B, L] float — 0 where there is no loss; sums to the batch loss
    is_causal: torch.Tensor  # [B] bool — causal or bidirectional attention, per row (a bool once moved by `to`, when uniform)
    # [B, L] bool — the targets whose likelihood the loss is a per-token average of (bits per byte
    # counts their UTF-8 bytes); for a bound (diffusion) every token the bound covers
    token_mask: torch.Tensor
    document_ids: torch.Tensor | None = None  # [B, L] — packed-document attention, when set
    # multi-token prediction: [B, L, H] the tokens t+2.. each extra head predicts, and their loss weights
    extra_targets: torch.Tensor | None = None
    extra_weights: torch.Tensor | None = None
    prefix_lengths: torch.Tensor | None = None  # [B] — causal rows see this many first positions bidirectionally (prefix LM)

    # flat indices of the positions with a loss (weight > 0), found on the host by `to` so that the
    # device never waits for a data-dependent shape (boolean indexing syncs a GPU with its host)
    scored: torch.Tensor | None = None

    def rows(self, sl: slice) -> "Batch":
        """Rows `sl` (host batches: `scored` is found again by `to`)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scored"}
        return Batch(**{k: v[sl] if isinstance(v, torch.Tensor) else v for k, v in values.items()})

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """The batch on `device`, with what the device should not have to find out computed where the
        batch is (the host, in training): `scored`, and the attention simplified (a uniform mode
        becomes a bool, one document per row or no prefix becomes None). On CUDA the host tensors are
        pinned first, so non_blocking copies overlap compute."""
        from hybridlm import model

        is_causal, document_ids, prefix_lengths, scored = self.is_causal, self.document_ids, self.prefix_lengths, self.scored
        if scored is None:  # not done yet (a batch moved once is not looked at again)
            scored = scored_positions(self.loss_weights)
            if model.values_on_host(is_causal, document_ids, prefix_lengths):
                is_causal, document_ids, prefix_lengths = model.simplify_attention(is_causal, document_ids, prefix_lengths)
        given = {"scored": scored, "is_causal": is_causal, "document_ids": document_ids, "prefix_lengths": prefix_lengths}
        pin = non_blocking and torch.device(device).type == "cuda"
        moved = {}
        for f in fields(self):
            value = given[f.name] if f.name in given else getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = (value.pin_memory() if pin and value.device.type == "cpu" else value).to(device, non_blocking=non_blocking)
            moved[f.name] = value
        return Batch(**moved)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def scored_positions(loss_weights: torch.Tensor) -> torch.Tensor:
    """Flat indices (into [B * L]) of the positions with a loss."""
    return (loss_weights > 0).reshape(-1).nonzero().squeeze(1)


def maskable(ids: torch.Tensor) -> torch.Tensor:
    """Special tokens (<pad>, <s>, </s>, <mask>, <unk>) are never corrupted."""
    return ids >= len(SPECIAL)


class Objective:
    """The interface. Subclasses set the class attributes and implement `corrupt`."""

    name: ClassVar[str] = "base"
    # TrainConfig keys this objective reads (beyond document_mask and z_loss, which all read)
    config_keys: ClassVar[tuple[str, ...]] = ()
    # the attention it trains with: "causal", "bidirectional" or "mixed" (per row)
    attention: ClassVar[str] = "causal"
    # what its validation loss is: "exact" (a likelihood), "bound" (an upper bound on the NLL) or
    # None (a pseudo-likelihood or a mix: no bits per byte)
    likelihood: ClassVar[str | None] = None
    loss_label: ClassVar[str] = "CE (nats/token)"  # what the validation loss measures, for tables
    # sentence scorers (hybridlm.evaluate.scoring), the first is the default; `perplexity_scorers`
    # are the ones `hlm eval perplexity` reports by default
    scorers: ClassVar[tuple[str, ...]] = ("causal",)
    perplexity_scorers: ClassVar[tuple[str, ...]] = ("causal",)
    # generation: "causal" (left to right, KV cache), "unmask" (iterative unmasking) or None
    generation: ClassVar[str | None] = "causal"
    prompt_as_prefix: ClassVar[bool] = False  # causal generation reads the prompt bidirectionally (prefix LM)
    # infilling of <mask> tokens: None (cannot), or the offset at which position i's prediction is
    # read (0: in place; 1: at i-1, GPT-BERT's masked next-token form)
    infill_shift: ClassVar[int | None] = None
    # export: as a LlamaForCausalLM, and/or as a masked LM (None: no; "": the export's root;
    # "masked_lm": a sub-folder, beside a causal LM)
    export_causal_lm: ClassVar[bool] = True
    export_masked_lm: ClassVar[str | None] = None
    forbid_mask_prediction: ClassVar[bool] = False  # MDLM's SUBS: the <mask> token is never a prediction

    def __init__(self, vocab_size: int, document_mask: bool = True, z_loss: float = 0.0):
        self.vocab_size = vocab_size
        self.document_mask = document_mask
        self.z_loss = z_loss
        self.distiller = None  # hybridlm.objectives.distill.Distiller, set by training with --distill-from

    # ------------------------------------------------------------ construction
    @classmethod
    def identity_keys(cls, cfg) -> tuple[str, ...]:
        """The config keys that make a run of this objective what it is (refused on --resume when changed)."""
        return cls.config_keys

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise UserError for option values this objective cannot use (called before a run starts)."""

    @classmethod
    def from_config(cls, cfg, vocab_size: int, data_dir=None) -> "Objective":
        """The objective with the options of a TrainConfig (data_dir: for corpus statistics)."""
        return cls(vocab_size, document_mask=cfg.document_mask, z_loss=cfg.z_loss,
                   **{k: getattr(cfg, k) for k in cls.config_keys})

    # ------------------------------------------------------------ training
    def corrupt(self, ids: torch.Tensor, generator: torch.Generator, progress: float = 1.0, train: bool = True) -> Batch:
        raise NotImplementedError

    def _doc_ids(self, inputs: torch.Tensor):
        return torch.cumsum((inputs == SPECIAL["bos"]).int(), -1) if self.document_mask else None

    def loss(self, model, batch: Batch):
        """(loss, metrics): the weighted CE over the positions with weight > 0, computed by the fused
        head (no [N, V] logits), plus PaLM's z-loss when set (GPT-BERT uses 1e-4).

        metrics map names to (sum, count) tensors, so micro-batches and processes aggregate exactly:
        "loss" is what is optimised; "nll" the likelihood term alone (no z-loss penalty); "ce_causal"
        and "ce_masked" the CE by attention mode of the rows.
        """
        # only what the batch needs is passed, so a model without these modes (a test's stand-in) still serves
        optional = {"prefix_lengths": batch.prefix_lengths} if batch.prefix_lengths is not None else {}  # a prefix LM's rows
        if batch.extra_targets is not None:
            optional["mtp"] = True  # multi-token prediction: the extra heads' hidden states too
        hidden = model(batch.input_ids, is_causal=batch.is_causal, document_ids=batch.document_ids, **optional)
        hidden, heads = hidden if batch.extra_targets is not None else (hidden, [])
        # no data-dependent shapes from here on: gathers by host-computed indices, masks as products
        scored = batch.scored if batch.scored is not None else scored_positions(batch.loss_weights)
        flat = hidden.reshape(-1, hidden.shape[-1])
        # every position scored (causal): a reshape, not a gather whose backward zero-fills and scatters
        h = flat if scored.numel() == flat.shape[0] else flat.index_select(0, scored)
        weights = batch.loss_weights.reshape(-1).index_select(0, scored)
        targets = batch.targets.reshape(-1).index_select(0, scored)
        masked_column = SPECIAL["mask"] if self.forbid_mask_prediction else None
        loss, ce = linear_cross_entropy(h, model.output_weight, targets, weights, self.z_loss, masked_column)
        if isinstance(batch.is_causal, bool):  # one mode for every row (see Batch.to)
            causal_rows = torch.full(scored.shape, float(batch.is_causal), device=scored.device)
        else:
            causal_rows = batch.is_causal[:, None].expand(batch.loss_weights.shape).reshape(-1).index_select(0, scored).float()
        one = torch.ones((), device=loss.device)
        extra = {}
        if self.distiller is not None and torch.is_grad_enabled():  # alpha * CE + (1 - alpha) * T^2 * KL(teachers || student)
            d = self.distiller
            kl = d.kl(model.head(h), d.teacher_probs(batch, scored, masked_column), masked_column)
            loss = d.alpha * loss + (1 - d.alpha) * d.temperature**2 * (weights.float() * kl).sum()
            extra["kl"] = ((weights.float() * kl).sum().detach(), one)
        for k, head in enumerate(heads):  # multi-token prediction: the extra heads' weighted CE, optimised, not reported as nll
            # every position, weight 0 where a head has no target (nearly all positions have one)
            head_weights = batch.extra_weights[..., k].reshape(-1)
            head_loss, head_ce = linear_cross_entropy(head.reshape(-1, head.shape[-1]), model.output_weight,
                                                      batch.extra_targets[..., k].reshape(-1), head_weights, 0.0, masked_column)
            loss = loss + head_loss
            has = (head_weights > 0).float()
            extra[f"ce_mtp{k + 2}"] = ((head_ce * has).sum(), has.sum())
        metrics = {"loss": (loss.detach(), one), "nll": ((weights.float() * ce).sum(), one), **extra}
        for mode, rows in (("causal", causal_rows), ("masked", 1 - causal_rows)):
            # always both keys, so every process all-reduces the same tensor shape
            metrics[f"ce_{mode}"] = ((ce * rows).sum(), rows.sum())
        return loss, metrics

    # ------------------------------------------------------------ evaluation
    def validation_views(self) -> dict[str, tuple["Objective", float]]:
        """name -> (objective to validate with, its weight in val_loss). One view: the objective itself."""
        return {"": (self, 1.0)}

    likelihood_view: ClassVar[str] = ""  # the view whose loss `likelihood` describes

    # ------------------------------------------------------------ sampling
    def unmask_fraction(self, t: float, t_next: float) -> float:
        """Share of the still-masked positions to reveal going from time t to t_next < t in iterative
        unmasking: (alpha(t_next) - alpha(t)) / (1 - alpha(t)). Objectives without a noise schedule
        use the log-linear one (alpha = 1 - t): an even number of tokens per round."""
        return (t - t_next) / t

    demo_config: ClassVar[dict] = {}  # config keys the demo sets for this objective (e.g. the mix's ratios)
    demo_sample_text: ClassVar[str] = "the <mask> near the dogs <mask> ."  # infilled in the demo where it cannot generate

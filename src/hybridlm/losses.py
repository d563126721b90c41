"""The training loss: one forward pass, then loss terms folded over it (torchtitan's "the loss owns
the head").

The objective makes the batch (inputs, targets, weights, attention); the loss runs the model once,
gathers the scored positions and lets each term add to the loss, report its own metrics and say what
it costs beyond the model:
- `TokenCE`: the weighted CE of the targets by the fused head (no [N, V] logits), with PaLM's
  z-loss when set (GPT-BERT uses 1e-4); metrics "nll" and the CE by attention mode of the rows;
- `MultiTokenHeads`: the extra heads' weighted CE (multi-token prediction), when the batch has them;
- `Distillation`: alpha * loss + (1 - alpha) * T^2 * KL(teachers || student), in training only, at
  the teachers' forward FLOPs.
Which terms a run has comes from its config (`build_loss`); nothing is attached to an objective.

metrics map names to (sum, count) tensors, so micro-batches and processes aggregate exactly: "loss"
is what is optimised, "nll" the likelihood term alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridlm.distill import Distiller
from hybridlm.errors import UserError
from hybridlm.objectives.base import SPECIAL, Batch, Objective, scored_positions
from hybridlm.ops import linear_cross_entropy


@dataclass
class Scored:
    """What every term reads: the batch, the hidden states of its scored positions and their weights."""

    batch: Batch
    hidden: torch.Tensor  # [N, D] at the scored positions
    heads: list  # the extra heads' hidden states [B, L, D] (multi-token prediction), else empty
    scored: torch.Tensor  # [N] flat indices of the scored positions
    weights: torch.Tensor  # [N]
    targets: torch.Tensor  # [N]
    masked_column: int | None  # the <mask> token, never a prediction (MDLM's SUBS), or None


class LossTerm:
    train_only = False  # applied in training steps only (not in validation)
    compile_backend: str | None = None  # the fused head's chunks compiled with this backend (`compile_head`)

    def __call__(self, model, s: Scored, loss: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """(the loss with this term folded in, this term's metrics)."""
        raise NotImplementedError

    def flops(self, tokens: int) -> float:
        """FLOPs this term spends beyond the model's own forward and backward (for equal-compute comparisons)."""
        return 0.0


class TokenCE(LossTerm):
    def __init__(self, z_loss: float = 0.0):
        self.z_loss = z_loss

    def __call__(self, model, s, loss):
        loss, ce = linear_cross_entropy(
            s.hidden, model.output_weight, s.targets, s.weights, self.z_loss, s.masked_column, self.compile_backend
        )
        causal_rows = s.batch.attention.causal_rows(len(s.batch), s.scored.device)
        L = s.batch.loss_weights.shape[1]
        causal = causal_rows.repeat_interleave(L).index_select(0, s.scored)
        one = torch.ones((), device=loss.device)
        metrics = {"nll": ((s.weights.float() * ce).sum(), one)}
        for mode, rows in (("causal", causal), ("masked", 1 - causal)):
            # always both keys, so every process all-reduces the same tensor shape
            metrics[f"ce_{mode}"] = ((ce * rows).sum(), rows.sum())
        return loss, metrics


class MultiTokenHeads(LossTerm):
    """The extra heads' weighted CE, optimised, not reported as nll: every position, weight 0 where a
    head has no target (nearly all positions have one)."""

    def __call__(self, model, s, loss):
        metrics = {}
        for k, head in enumerate(s.heads):
            head_weights = s.batch.extra_weights[..., k].reshape(-1)
            head_loss, head_ce = linear_cross_entropy(
                head.reshape(-1, head.shape[-1]),
                model.output_weight,
                s.batch.extra_targets[..., k].reshape(-1),
                head_weights,
                0.0,
                s.masked_column,
                self.compile_backend,
            )
            loss = loss + head_loss
            has = (head_weights > 0).float()
            metrics[f"ce_mtp{k + 2}"] = ((head_ce * has).sum(), has.sum())
        return loss, metrics


class Distillation(LossTerm):
    train_only = True

    def __init__(self, distiller: Distiller):
        self.distiller = distiller

    def __call__(self, model, s, loss):
        d = self.distiller
        kl = d.kl(model.head(s.hidden), d.teacher_probs(s.batch, s.scored, s.masked_column), s.masked_column)
        weighted = (s.weights.float() * kl).sum()
        loss = d.alpha * loss + (1 - d.alpha) * d.temperature**2 * weighted
        return loss, {"kl": (weighted.detach(), torch.ones((), device=loss.device))}

    def flops(self, tokens):
        return self.distiller.flops(tokens)


class GiddELBO(LossTerm):
    """GIDD's NELBO (objectives.gidd): full logits at the scored positions, KL and importance terms, weighted by
    the bound's weights for "nll" and by the training weights (batch.noise's last channel) for the loss."""

    def __init__(self, support: int):
        self.support = support

    def __call__(self, model, s, loss):
        from hybridlm.objectives.gidd import gidd_elbo

        if s.batch.noise is None:  # a mix's view of one of its token-CE objectives
            return TokenCE()(model, s, loss)
        noise = s.batch.noise.reshape(-1, s.batch.noise.shape[-1]).index_select(0, s.scored)
        seen = s.batch.input_ids.reshape(-1).index_select(0, s.scored)
        terms = gidd_elbo(model.head(s.hidden), s.targets, seen, noise, self.support)
        nll = (s.weights.float() * terms).sum()
        trained = (noise[:, -1].float() * terms).sum()
        one = torch.ones((), device=trained.device)
        return (trained if loss is None else loss + trained), {"nll": (nll.detach(), one)}


class TrainingLoss(torch.nn.Module):
    """The model and the loss terms as one module (what DDP / FSDP2 wrap): batch -> (loss, metrics)."""

    def __init__(self, model: torch.nn.Module, objective: Objective, terms: list[LossTerm]):
        super().__init__()
        self.model, self.objective, self.terms = model, objective, terms

    def forward(self, batch: Batch, objective: Objective | None = None, train: bool = True):
        """objective: another view of the same model (validation of the hybrid's two readings);
        train=False leaves out the training-only terms (distillation)."""
        objective = objective or self.objective
        mtp = batch.extra_targets is not None
        soft = {} if batch.soft_inputs is None else {"soft_inputs": batch.soft_inputs}
        hidden = self.model(batch.input_ids, batch.attention, mtp=mtp, **soft)
        hidden, heads = hidden if mtp else (hidden, [])
        # no data-dependent shapes from here on: gathers by host-computed indices, masks as products
        scored = batch.scored if batch.scored is not None else scored_positions(batch.loss_weights)
        flat = hidden.reshape(-1, hidden.shape[-1])
        # every position scored (causal): a reshape, not a gather whose backward zero-fills and scatters
        h = flat if scored.numel() == flat.shape[0] else flat.index_select(0, scored)
        masked_column = SPECIAL["mask"] if objective.capabilities.forbid_mask_prediction else None
        s = Scored(
            batch,
            h,
            heads,
            scored,
            batch.loss_weights.reshape(-1).index_select(0, scored),
            batch.targets.reshape(-1).index_select(0, scored),
            masked_column,
        )
        loss, metrics = None, {}
        for term in self.terms:
            if train or not term.train_only:
                loss, more = term(self.model, s, loss)
                metrics.update(more)
        return loss, {"loss": (loss.detach(), torch.ones((), device=loss.device)), **metrics}

    def compile_head(self, backend: str = "inductor") -> None:
        """Compile the fused head + CE's chunks (a compiled training step: the trunk is compiled apart)."""
        for term in self.terms:
            term.compile_backend = backend

    def flops(self, tokens: int, train: bool = True) -> float:
        """What the terms spend beyond the model on a step of `tokens` tokens."""
        return sum(t.flops(tokens) for t in self.terms if train or not t.train_only)


def loss_terms(z_loss: float, teachers: Distiller | None, heads: bool, objective: Objective | None = None):
    """The objective's term (token CE with z_loss, unless its bound is another form), distillation when there are
    teachers, the extra heads' CE when there are heads."""
    if objective is not None and teachers is not None and type(objective.loss_term()) is not TokenCE:
        raise UserError(f"distillation adds a KL to a token CE; the {objective.name} objective's loss is not one")
    return (
        [objective.loss_term(z_loss) if objective is not None else TokenCE(z_loss)]
        + ([Distillation(teachers)] if teachers is not None else [])
        + ([MultiTokenHeads()] if heads else [])
    )


def loss_of(
    model,
    objective: Objective,
    batch: Batch,
    z_loss: float = 0.0,
    teachers: Distiller | None = None,
    compile_backend: str | None = None,
):
    """(loss, metrics) of one batch as training computes it (for tests, notebooks and benches); compile_backend:
    the head's chunks compiled, as `hlm train --compile` does (with `model.compile_trunk()` for the trunk)."""
    loss = TrainingLoss(model, objective, loss_terms(z_loss, teachers, batch.extra_targets is not None, objective))
    if compile_backend:
        loss.compile_head(compile_backend)
    return loss(batch)


def build_loss(cfg, model, objective: Objective, device) -> TrainingLoss:
    """The training loss a config asks for: its z_loss, its teachers, the model's extra heads."""
    teachers = None
    if cfg.distill_from:
        teachers = Distiller.from_paths(
            cfg.distill_from, cfg.data, cfg.max_len(), device, cfg.distill_alpha, cfg.distill_temperature
        )
    return TrainingLoss(model, objective, loss_terms(cfg.z_loss, teachers, len(model.mtp) > 0, objective))

"""What every objective shares: the corrupted `Batch` and the weighted cross-entropy loss.

An objective turns clean windows of L+1 token ids into a Batch (inputs, targets, attention mode
per row, per-token loss weights). The weights are normalised over the *global* batch, so the
batch loss is simply sum(weight * CE): any split of the rows into micro-batches or processes
sums to the same loss and the same gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from hybridlm.tokenizer import special_ids

SPECIAL = special_ids()


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] long — what the model sees
    targets: torch.Tensor  # [B, L] long — token to predict at each position
    loss_weights: torch.Tensor  # [B, L] float — 0 where there is no loss; sums to the batch loss
    is_causal: torch.Tensor  # [B] bool — causal or bidirectional attention, per row
    document_ids: torch.Tensor | None = None  # [B, L] — packed-document attention, when set
    t: torch.Tensor | None = None  # [B] — diffusion time, when the objective has one

    def rows(self, sl: slice) -> "Batch":
        return Batch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[sl]) for f in fields(self)})

    def to(self, device) -> "Batch":
        return Batch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device)) for f in fields(self)})

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def maskable(ids: torch.Tensor) -> torch.Tensor:
    """Special tokens (<pad>, <s>, </s>, <mask>, <unk>) are never corrupted."""
    return ids >= len(SPECIAL)


class Objective:
    name = "base"
    forbid_mask_prediction = False  # MDLM's SUBS: the <mask> token is never a prediction

    def __init__(self, vocab_size: int, document_mask: bool = True, z_loss: float = 0.0):
        self.vocab_size = vocab_size
        self.document_mask = document_mask
        self.z_loss = z_loss

    def corrupt(self, ids: torch.Tensor, generator: torch.Generator, progress: float = 1.0, train: bool = True) -> Batch:
        raise NotImplementedError

    def _doc_ids(self, inputs: torch.Tensor):
        return torch.cumsum((inputs == SPECIAL["bos"]).int(), -1) if self.document_mask else None

    def loss(self, model, batch: Batch):
        """(loss, stats): the weighted CE over the positions with weight > 0 (PaLM's z-loss, which
        keeps the softmax normaliser near 1, added when set; GPT-BERT uses 1e-4).

        stats maps names to (sum, count) so micro-batches and processes aggregate exactly.
        """
        select = batch.loss_weights > 0
        loss, ce = model(batch.input_ids, is_causal=batch.is_causal, document_ids=batch.document_ids, select=select,
                         labels=batch.targets[select], label_weights=batch.loss_weights[select], z_loss=self.z_loss,
                         never_predict=SPECIAL["mask"] if self.forbid_mask_prediction else None)
        causal_rows = batch.is_causal[:, None].expand_as(select)[select]
        stats = {"loss": (loss.detach(), 1)}
        for mode, rows in (("causal", causal_rows), ("masked", ~causal_rows)):
            # always both keys, so every process all-reduces the same tensor shape
            stats[f"ce_{mode}"] = (ce[rows].sum(), int(rows.sum()))
        return loss, stats

"""Knowledge distillation from trained runs (BabyLlama, BabyLM 2023): any objective's loss becomes
alpha * its CE + (1 - alpha) * T^2 * KL(teacher || student), the teacher distribution being the
mean of the teachers' softmax(logits / T) at the positions the objective scores.

Teachers run in inference mode on the student's own batch (the same corrupted inputs, attention
and prefix), so distillation composes with every objective whose targets are tokens. BabyLlama
used alpha = 0.5 and T = 2. The student's logits are materialised for the scored positions only.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from hybridlm.errors import UserError


class Distiller:
    def __init__(self, teachers: list[torch.nn.Module], alpha: float = 0.5, temperature: float = 2.0):
        self.teachers, self.alpha, self.temperature = teachers, alpha, temperature
        for t in teachers:
            t.eval().requires_grad_(False)
        self.parameters = sum(t.num_parameters() for t in teachers)

    @classmethod
    def from_runs(cls, paths, tokenizer_hash: str, seq_len: int, device, alpha: float, temperature: float) -> "Distiller":
        from hybridlm.runs import RunDir

        cls.check(paths, tokenizer_hash)
        teachers = []
        for path in paths:
            model = RunDir(path).load(str(device)).model
            if model.cfg.max_seq_len < seq_len:
                raise UserError(f"teacher {path} has a context of {model.cfg.max_seq_len}, shorter than --seq-len {seq_len}")
            teachers.append(model)
        return cls(teachers, alpha, temperature)

    @staticmethod
    def check(paths, tokenizer_hash: str) -> None:
        """Every teacher is a run trained with the data's tokenizer (checked before anything is written)."""
        from hybridlm.runs import RunDir
        from hybridlm.tokenizer import tokenizer_hash as hash_of

        for path in paths:
            run = RunDir(path)
            if not run.is_run() or not run.tokenizer_path.is_file():
                raise UserError(f"--distill-from {path} is not a hybridlm run (no config.json); give a trained run directory")
            if hash_of(run.tokenizer_path) != tokenizer_hash:
                raise UserError(f"teacher {path} was trained with another tokenizer than the data; distil from runs on the same tokenizer")
            if run.latest_checkpoint() is None:
                raise UserError(f"teacher {path} has no checkpoint yet; train it first")

    @torch.no_grad()
    def teacher_probs(self, batch, select: torch.Tensor, masked_column: int | None) -> torch.Tensor:
        """The mean of the teachers' tempered distributions at the selected positions, fp32 [N, V]."""
        probs = None
        for teacher in self.teachers:
            hidden = teacher(batch.input_ids, is_causal=batch.is_causal, document_ids=batch.document_ids,
                             prefix_lengths=batch.prefix_lengths)
            logits = teacher.head(hidden[select], fp32=True) / self.temperature
            if masked_column is not None:
                logits[:, masked_column] = float("-inf")
            p = torch.softmax(logits, -1)
            probs = p if probs is None else probs + p
        return probs / len(self.teachers)

    def kl(self, student_logits: torch.Tensor, teacher_p: torch.Tensor, masked_column: int | None) -> torch.Tensor:
        """KL(teacher || student) per position, of the tempered distributions (fp32)."""
        logits = student_logits.float() / self.temperature
        if masked_column is not None:
            logits = logits.masked_fill(torch.arange(logits.shape[-1], device=logits.device) == masked_column, float("-inf"))
        log_q = F.log_softmax(logits, -1)
        log_p = teacher_p.clamp_min(1e-30).log()
        return torch.where(teacher_p > 0, teacher_p * (log_p - log_q), torch.zeros_like(log_q)).sum(-1)

    def flops(self, tokens: int) -> float:
        """Forward FLOPs of the teachers on `tokens` tokens (2 per parameter and token)."""
        return 2.0 * self.parameters * tokens

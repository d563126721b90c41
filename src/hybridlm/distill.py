"""Knowledge distillation (BabyLlama, BabyLM 2023): any objective's loss becomes
alpha * its CE + (1 - alpha) * T^2 * KL(teacher || student), the teacher distribution being the
mean of the teachers' softmax(logits / T) at the positions the objective scores.

Teachers run in inference mode on the student's own batch (the same corrupted inputs, attention
and prefix), so distillation composes with every objective whose targets are tokens. A teacher is
an hlm run, or a local Hugging Face causal LM on the same vocabulary (BabyLlama's GPT-2 and Llama
teachers; an hlm export): it gets the student's packed-document attention as a 4D mask, so it
never reads across a document boundary the student cannot. BabyLlama used alpha = 0.5 and T = 2.
The student's logits are materialised for the scored positions only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

from hybridlm.errors import UserError
from hybridlm.hf import load_hf_model
from hybridlm.objectives.capabilities import Attention
from hybridlm.runs import RunDir
from hybridlm.tokenizer import load_tokenizer, tokenizer_hash


def hf_config(path) -> dict | None:
    """The config.json of a Hugging Face model folder (it names a model_type; an hlm run's names an
    objective), or None when `path` is not one."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and "model_type" in config and "objective" not in config else None


class HFTeacher(torch.nn.Module):
    """A local `transformers` causal LM read like hlm's model: logits at the scored positions of a Batch.

    Loaded from safetensors only (no pickle) and never with the folder's own code. Its positions run
    0..T-1 over the window as hlm's do; the student's attention (packed documents, prefix) is passed
    as an additive 4D mask, which transformers uses as given.
    """

    def __init__(self, path, vocab_size: int, device):
        super().__init__()
        config, model = load_hf_model(
            path, "AutoModelForCausalLM", "the teacher (a causal LM)", use_safetensors=True, dtype=torch.float32
        )
        self.model = model.to(device).eval()
        self.vocab_size = vocab_size
        self.max_len = getattr(config, "max_position_embeddings", None) or 0

    def num_parameters(self) -> int:
        return sum(x.numel() for x in self.model.parameters())

    def scored_logits(self, batch, scored: torch.Tensor) -> torch.Tensor:
        T = batch.input_ids.shape[1]
        # no mask: plain causal attention, the model's own (bidirectional students are refused by `check`)
        mask, _ = batch.attention.mask(T, batch.input_ids.device)
        dtype = next(self.model.parameters()).dtype
        additive = (
            None
            if mask is None
            else torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        )
        logits = self.model(input_ids=batch.input_ids, attention_mask=additive).logits
        logits = logits.reshape(-1, logits.shape[-1]).index_select(0, scored)
        return logits[:, : self.vocab_size].float()  # a padded embedding's extra rows are no tokens of ours


def _scored_logits(teacher, batch, scored: torch.Tensor) -> torch.Tensor:
    """The teacher's fp32 logits at the scored positions (flat indices) of the student's batch."""
    if isinstance(teacher, HFTeacher):
        return teacher.scored_logits(batch, scored)
    hidden = teacher(batch.input_ids, batch.attention)
    return teacher.head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, scored), fp32=True)


class Distiller:
    def __init__(self, teachers: list[torch.nn.Module], alpha: float = 0.5, temperature: float = 2.0):
        self.teachers, self.alpha, self.temperature = teachers, alpha, temperature
        for t in teachers:
            t.eval().requires_grad_(False)
        self.parameters = sum(t.num_parameters() for t in teachers)

    @classmethod
    def from_paths(cls, paths, data_dir, seq_len: int, device, alpha: float, temperature: float) -> Distiller:
        """Teachers from hlm run directories and/or local Hugging Face causal LM folders."""
        teachers = []
        for path in paths:
            if hf_config(path) is not None:
                model = HFTeacher(path, load_tokenizer(Path(data_dir)).get_vocab_size(), device)
                context = model.max_len
            else:
                model = RunDir(path).load(str(device)).model
                context = model.cfg.max_seq_len
            if context < seq_len:
                raise UserError(f"teacher {path} has a context of {context}, shorter than --seq-len {seq_len}")
            teachers.append(model)
        return cls(teachers, alpha, temperature)

    @staticmethod
    def check(paths, data_dir, data_tokenizer: str, attention: str) -> None:
        """Every teacher is a run trained with the data's tokenizer, or a Hugging Face causal LM with
        its vocabulary for a causal student (checked before anything is written)."""
        for path in paths:
            config = hf_config(path)
            if config is not None:
                archs = " ".join(config.get("architectures") or [])
                if "CausalLM" not in archs:
                    raise UserError(
                        f"teacher {path} is a {archs or 'model of no stated architecture'}; a Hugging Face teacher "
                        "must be a causal LM (distil other objectives from hlm runs)"
                    )
                if attention is not Attention.CAUSAL:
                    raise UserError(
                        f"teacher {path} is a Hugging Face causal LM and the objective trains {attention.value} rows; "
                        "distil it into a causal or prefix student, or distil from hlm runs"
                    )
                weights = sorted(Path(path).glob("*.safetensors"))
                if not weights:
                    raise UserError(
                        f"teacher {path} has no .safetensors weights; hlm loads no pickled weights "
                        "(save it with save_pretrained(safe_serialization=True))"
                    )
                for w in weights:  # the header and the data's extent, read before the run folder is made
                    try:
                        with safe_open(str(w), "pt") as f:
                            f.keys()
                    except Exception as e:  # safetensors' own errors name the damage
                        raise UserError(
                            f"teacher {path}: {w.name} is not a readable safetensors file "
                            f"({str(e).splitlines()[0][:100]}); re-save the model"
                        ) from None
                if load_tokenizer(path).get_vocab() != load_tokenizer(Path(data_dir)).get_vocab():
                    raise UserError(
                        f"teacher {path} has another vocabulary than the data's tokenizer; distil from models on "
                        "the same tokenizer"
                    )
                continue
            run = RunDir(path)
            if not run.is_run() or not run.tokenizer_path.is_file():
                raise UserError(
                    f"--distill-from {path} is neither a hybridlm run nor a Hugging Face model folder (no "
                    "config.json); "
                    "give a trained run directory or a local causal LM"
                )
            if tokenizer_hash(run.tokenizer_path) != data_tokenizer:
                raise UserError(
                    f"teacher {path} was trained with another tokenizer than the data; distil from runs on the "
                    "same tokenizer"
                )
            if run.latest_checkpoint() is None:
                raise UserError(f"teacher {path} has no checkpoint yet; train it first")

    @torch.no_grad()
    def teacher_probs(self, batch, scored: torch.Tensor, masked_column: int | None) -> torch.Tensor:
        """The mean of the teachers' tempered distributions at the scored positions (flat indices), fp32 [N, V]."""
        probs = None
        for teacher in self.teachers:
            logits = _scored_logits(teacher, batch, scored) / self.temperature
            if masked_column is not None:
                logits[:, masked_column] = float("-inf")
            p = torch.softmax(logits, -1)
            probs = p if probs is None else probs + p
        return probs / len(self.teachers)

    def kl(self, student_logits: torch.Tensor, teacher_p: torch.Tensor, masked_column: int | None) -> torch.Tensor:
        """KL(teacher || student) per position, of the tempered distributions (fp32)."""
        logits = student_logits.float() / self.temperature
        if masked_column is not None:
            logits = logits.masked_fill(
                torch.arange(logits.shape[-1], device=logits.device) == masked_column, float("-inf")
            )
        log_q = F.log_softmax(logits, -1)
        log_p = teacher_p.clamp_min(1e-30).log()
        return torch.where(teacher_p > 0, teacher_p * (log_p - log_q), torch.zeros_like(log_q)).sum(-1)

    def flops(self, tokens: int) -> float:
        """Forward FLOPs of the teachers on `tokens` tokens (2 per parameter and token)."""
        return 2.0 * self.parameters * tokens

"""Adapters that give every scorer the same view of a model: a hybridlm run or a local HF model."""

from __future__ import annotations

from pathlib import Path

import torch

from hybridlm.errors import UserError
from hybridlm.tokenizer import BOS, MASK


class ScoringLM:
    """tokenize(text) -> ids (without specials); logits at selected positions of padded batches."""

    name: str
    kind: str  # "causal", "masked", "hybrid", "diffusion"
    bos_id: int
    mask_id: int | None
    max_len: int

    def tokenize(self, text: str) -> tuple[list[int], list[int | None]]:
        """Token ids and the word index of each token (for within-word PLL)."""
        raise NotImplementedError

    def selected_logits(self, ids: torch.Tensor, lengths: torch.Tensor, is_causal: bool, select: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def id_to_token(self, i: int) -> str:
        raise NotImplementedError

    def starts_word(self, ids) -> list[bool]:
        """Whether each token begins a word, from the subword markers of its string:
        byte-level BPE "Ġ" and SentencePiece "▁" mark a word start, WordPiece "##" a continuation."""
        toks = [self.id_to_token(int(i)) or "" for i in ids]
        if any(t.startswith("##") for t in toks):
            return [not t.startswith("##") for t in toks]
        spaces = ("Ġ", "▁")

        def start(prev, t):
            if t.startswith(spaces) or prev is None:
                return True
            # punctuation is its own pre-token after a word character, not after a bare space marker
            return not t[:1].isalnum() and prev not in spaces and prev[-1:].isalnum()

        return [start(toks[i - 1] if i else None, t) for i, t in enumerate(toks)]

    @property
    def scorers(self) -> tuple[str, ...]:
        return {
            "causal": ("causal",),
            "masked": ("pll", "pll-word"),
            "hybrid": ("mntp", "mntp-word", "causal", "fused"),
            "diffusion": ("elbo",),
        }[self.kind]


def _word_ids(enc) -> list:
    return list(enc.word_ids) if enc.word_ids is not None else [None] * len(enc.ids)


class RunLM(ScoringLM):
    def __init__(self, run_dir, device="cpu", precision="fp32"):
        from hybridlm.runs import load_run

        self.run = load_run(run_dir, device=device)
        self.model, self.tok = self.run.model, self.run.tokenizer
        self.name, self.kind = str(run_dir), self.run.objective
        self.bos_id, self.mask_id = self.tok.token_to_id(BOS), self.tok.token_to_id(MASK)
        self.max_len = self.model.cfg.max_seq_len
        self.device = torch.device(device)
        self.autocast = precision == "bf16"

    def tokenize(self, text):
        enc = self.tok.encode(text, add_special_tokens=False)
        return enc.ids, _word_ids(enc)

    def id_to_token(self, i):
        return self.tok.id_to_token(i)

    @torch.no_grad()
    def selected_logits(self, ids, lengths, is_causal, select):
        ids, select = ids.to(self.device), select.to(self.device)
        pos = torch.arange(ids.shape[1], device=self.device)
        # padding is its own "document": real tokens never attend to it in either mode
        doc = (pos[None] >= lengths.to(self.device)[:, None]).int()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.model(ids, is_causal=is_causal, document_ids=None if is_causal else doc, select=select,
                             fp32_head=True)
        return out.float()


class HFLM(ScoringLM):
    """A local `transformers` causal or masked LM (no hub access: a directory)."""

    def __init__(self, path, device="cpu", precision="fp32"):
        try:
            import transformers
        except ImportError:
            raise UserError("--hf-model needs transformers: pip install 'hybridlm[hf]'") from None
        p = Path(path)
        if not (p / "config.json").is_file():
            raise UserError(f"{p} is not a local Hugging Face model directory (no config.json)")
        config = transformers.AutoConfig.from_pretrained(p, trust_remote_code=True)
        archs = " ".join(config.architectures or [])
        masked = "MaskedLM" in archs or getattr(config, "is_decoder", None) is False and "CausalLM" not in archs
        cls = transformers.AutoModelForMaskedLM if masked else transformers.AutoModelForCausalLM
        self.model = cls.from_pretrained(p, trust_remote_code=True, dtype=torch.float32).to(device).eval()
        self.tok = transformers.AutoTokenizer.from_pretrained(p, trust_remote_code=True)
        self.name, self.kind = str(p), "masked" if masked else "causal"
        bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.cls_token_id
        if bos is None:
            raise UserError(f"the tokenizer of {p} has no BOS/CLS token; scoring needs an explicit start token")
        self.bos_id, self.mask_id = bos, self.tok.mask_token_id
        if masked and self.mask_id is None:
            raise UserError(f"the tokenizer of {p} has no mask token; PLL scoring needs one")
        self.max_len = getattr(config, "max_position_embeddings", 512)
        self.device = torch.device(device)
        self.autocast = precision == "bf16"

    def id_to_token(self, i):
        return self.tok.convert_ids_to_tokens(i)

    def tokenize(self, text):
        enc = self.tok(text, add_special_tokens=False)
        return enc["input_ids"], enc.word_ids() if hasattr(enc, "word_ids") else [None] * len(enc["input_ids"])

    @torch.no_grad()
    def selected_logits(self, ids, lengths, is_causal, select):
        ids = ids.to(self.device)
        attn = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long().to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(input_ids=ids, attention_mask=attn).logits
        return logits[select.to(self.device)].float()


def load_lm(run=None, hf_model=None, device="cpu", precision="fp32") -> ScoringLM:
    if (run is None) == (hf_model is None):
        raise UserError("give exactly one of --run RUN or --hf-model DIR")
    return RunLM(run, device, precision) if run is not None else HFLM(hf_model, device, precision)

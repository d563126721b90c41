"""Adapters that give every scorer the same view of a model: a hybridlm run or a local HF model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hybridlm.errors import UserError
from hybridlm.hf import load_hf_model, load_hf_tokenizer
from hybridlm.model import AttentionSpec
from hybridlm.objectives import Attention, Objective, objective_class
from hybridlm.runs import LoadedRun, load_run
from hybridlm.scorers import available_scorers
from hybridlm.tokenizer import BOS, MASK, hf_tokenizer


def word_starts(word_ids) -> list[bool]:
    """The one definition of a word: a token begins one when its word index (from the tokenizer's
    pre-tokenisation) differs from the previous token's; a token without an index is its own word."""
    return [w is None or i == 0 or w != word_ids[i - 1] for i, w in enumerate(word_ids)]


def check_export_layout(path) -> None:
    """Refuse, in one line, a masked view exported before MNTP views kept GPT-BERT's layout: its
    logits were moved to the predicted position, so the official `mntp` backend (which reads i-1
    itself) read it one token off."""
    config = Path(path) / "config.json"
    try:
        cfg = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # transformers' own loading reports a damaged config
    if isinstance(cfg, dict) and cfg.get("model_type") == "hybridlm" and cfg.get("mntp_shift") is True:
        source = Path(path) / ("../hybridlm.json" if Path(path).name == "masked_lm" else "hybridlm.json")
        run = ""
        if source.is_file():
            try:
                run = " --run " + str(json.loads(source.read_text(encoding="utf-8")).get("source", "RUN"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                pass
        raise UserError(
            f"{path} is an MNTP export from before 2026-12-02 (mntp_shift: its logits are shifted, so the "
            f"official mntp backend reads them one token off); export the run again: hlm export{run or ' --run RUN'}"
            " --out NEW_FOLDER"
        )


class ScoringLM:
    """tokenize(text) -> (ids, word starts); logits at selected positions of padded batches.

    `objective` answers which scorers the model has (`capabilities.scorers`, the first the default)
    and, for diffusion, how its bound is drawn."""

    name: str
    objective: Objective
    bos_id: int
    mask_id: int | None
    max_len: int
    weights: str | None = None  # a run's: "ema" (its moving average) or "raw"; None: another model
    shares_prefixes = False  # selected_logits takes segment_ids and position_ids (a shared prefix's branches)

    @property
    def kind(self) -> str:
        return self.objective.name

    @property
    def scorers(self) -> tuple[str, ...]:
        return available_scorers(self.objective.capabilities)

    def tokenize(self, text: str) -> tuple[list[int], list[bool]]:
        """Token ids (without specials) and whether each token begins a word (for within-word PLL)."""
        ids, starts, _ = self.tokenize_offsets(text)
        return ids, starts

    def tokenize_offsets(self, text: str) -> tuple[list[int], list[bool], list[tuple[int, int]]]:
        """As tokenize, plus each token's character span in `text` (for scoring a completion)."""
        raise NotImplementedError

    def selected_logits(
        self, ids: torch.Tensor, lengths: torch.Tensor, attention: AttentionSpec, select: torch.Tensor
    ) -> torch.Tensor:
        """Logits at the `select`ed positions of padded rows (`lengths` real tokens each) that attend as
        `attention` says (the scoring engine's spec: its objective's rule, padding, prefixes, and, only
        where shares_prefixes, a shared prefix's branches)."""
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def pipeline_tokenizer(self):
        """The `transformers` tokenizer the official BabyLM pipeline tokenizes this model with (the
        tokenizer's own special tokens; for a run, that of its export: <s> first)."""
        raise NotImplementedError


class RunLM(ScoringLM):
    shares_prefixes = True

    def __init__(self, run_dir, device="cpu", precision="fp32", checkpoint=None, weights="auto"):
        """run_dir: a run's folder, or a run already loaded (LoadedRun: its model is used as it is)."""
        loaded = isinstance(run_dir, LoadedRun)
        self.run = run_dir if loaded else load_run(run_dir, device=device, checkpoint=checkpoint, weights=weights)
        self.weights = self.run.weights
        self.model, self.tok, self.objective = self.run.model, self.run.tokenizer, self.run.objective
        self.name = str(self.run.path if loaded else run_dir)
        device = next(self.model.parameters()).device if loaded else device
        self.bos_id, self.mask_id = self.tok.token_to_id(BOS), self.tok.token_to_id(MASK)
        self.max_len = self.model.cfg.max_seq_len
        self.device = torch.device(device)
        self.autocast = precision == "bf16"

    def pipeline_tokenizer(self):
        if getattr(self, "_pipeline_tok", None) is None:
            self._pipeline_tok = hf_tokenizer(self.run.dir.tokenizer_path)
        return self._pipeline_tok

    def tokenize_offsets(self, text):
        enc = self.tok.encode(text, add_special_tokens=False)
        return enc.ids, word_starts(enc.word_ids if enc.word_ids is not None else [None] * len(enc.ids)), enc.offsets

    @torch.no_grad()
    def selected_logits(self, ids, lengths, attention, select):
        ids, select = ids.to(self.device), select.to(self.device)
        spec = attention.map(lambda x: x.to(self.device))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            hidden = self.model(ids, spec)
            return self.model.head(hidden[select], fp32=True)


def _auto_class(config) -> str:
    """A masked LM by its architecture (or an encoder config), else a causal LM."""
    archs = " ".join(config.architectures or [])
    masked = "MaskedLM" in archs or getattr(config, "is_decoder", None) is False and "CausalLM" not in archs
    return "AutoModelForMaskedLM" if masked else "AutoModelForCausalLM"


class HFLM(ScoringLM):
    """A local `transformers` causal or masked LM (no hub access: a directory)."""

    def __init__(self, path, device="cpu", precision="fp32", trust_remote_code: bool = False):
        p = Path(path)
        check_export_layout(p)
        config, model = load_hf_model(p, _auto_class, "the Hugging Face model", trust_remote_code, dtype=torch.float32)
        self.model = model.to(device).eval()
        self.tok = load_hf_tokenizer(p, trust_remote_code)
        masked = _auto_class(config) == "AutoModelForMaskedLM"
        # a local HF model is scored as the objective of its kind (registry lookup, not a switch); an
        # hlm MNTP export (GPT-BERT's layout: position i predicts token i+1) as MNTP
        kind = "causal" if not masked else "mntp" if getattr(config, "mntp", False) is True else "masked"
        self.name, self.objective = str(p), objective_class(kind)(len(self.tok))
        bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.cls_token_id
        if bos is None:
            raise UserError(f"the tokenizer of {p} has no BOS/CLS token; scoring needs an explicit start token")
        self.bos_id, self.mask_id = bos, self.tok.mask_token_id
        if masked and self.mask_id is None:
            raise UserError(f"the tokenizer of {p} has no mask token; PLL scoring needs one")
        self.max_len = getattr(config, "max_position_embeddings", 512)
        self.device = torch.device(device)
        self.autocast = precision == "bf16"

    def pipeline_tokenizer(self):
        return self.tok

    def tokenize_offsets(self, text):
        if (
            not self.tok.is_fast
        ):  # slow tokenizers have neither word ids nor offsets: each token its own word, spans unknown
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            return ids, [True] * len(ids), [(0, len(text))] * len(ids)
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], word_starts(enc.word_ids()), [tuple(o) for o in enc["offset_mapping"]]

    @property
    def shares_prefixes(self) -> bool:
        """Whether this causal model takes a custom 4D mask and per-row positions (so that a shared prefix's
        branches are scored in one row): probed once, on a tiny packed row against its copies alone."""
        if getattr(self, "_shares", None) is None:
            causal = self.objective.capabilities.attention is Attention.CAUSAL
            self._shares = causal and self._probe_shared_prefix()
        return self._shares

    def _probe_shared_prefix(self) -> bool:
        g = torch.Generator().manual_seed(0)
        vocab = min(getattr(self.model.config, "vocab_size", 2) or 2, 1000)
        prefix, left, right = (torch.randint(vocab, (n,), generator=g).tolist() for n in (4, 3, 2))
        packed = torch.tensor([prefix + left + right])
        segments = torch.tensor([[0] * 4 + [1] * 3 + [2] * 2])
        positions = torch.tensor([list(range(7)) + [4, 5]])
        every = torch.ones_like(packed, dtype=torch.bool)
        try:
            packed_spec = AttentionSpec(True, segment_ids=segments, position_ids=positions)
            got = self.selected_logits(packed, torch.tensor([9]), packed_spec, every)
            want = [
                self.selected_logits(
                    torch.tensor([r]), torch.tensor([len(r)]), AttentionSpec(True), torch.ones(1, len(r), dtype=bool)
                )
                for r in (prefix + left, prefix + right)
            ]
        except Exception:  # an architecture whose attention takes no custom mask: score each copy whole
            return False
        want = torch.cat([want[0], want[1][4:]])
        return bool(torch.allclose(got, want, atol=1e-4, rtol=1e-4))

    @torch.no_grad()
    def selected_logits(self, ids, lengths, attention, select):
        ids = ids.to(self.device)
        extra = {}
        # a shared prefix (segment 0) and its branches: hlm's own dense mask rule as a custom 4D mask (padding
        # trails each row, so causal attention keeps real tokens off it; a padding position sees itself); a
        # transformers model otherwise attends in its own mode, padding masked out
        seen, position_ids = None, attention.position_ids
        if attention.segment_ids is not None:
            seen = AttentionSpec(True, segment_ids=attention.segment_ids).mask(ids.shape[1], self.device)[0]
        if seen is None:
            attn = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long().to(self.device)
        else:
            attn = seen
            if getattr(self.model.config, "_attn_implementation", "sdpa") == "eager":  # an additive mask there
                attn = torch.zeros(seen.shape, device=self.device).masked_fill(~seen, torch.finfo(torch.float32).min)
            extra["position_ids"] = position_ids.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(input_ids=ids, attention_mask=attn, **extra).logits
        return logits[select.to(self.device)].float()


def load_lm(
    run=None, hf_model=None, device="cpu", precision="fp32", trust_remote_code=False, weights="auto"
) -> ScoringLM:
    if (run is None) == (hf_model is None):
        raise UserError("give exactly one of --run RUN or --hf-model DIR")
    if hf_model is not None:
        return HFLM(hf_model, device, precision, trust_remote_code)
    return RunLM(run, device, precision, weights=weights)

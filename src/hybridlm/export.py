"""Export a run as a Hugging Face `transformers` model directory.

What a run exports to is its objective's answer. Causal-attention models (causal, hybrid) become
`LlamaForCausalLM` with no custom code: the core model uses Llama's RMSNorm, rotary convention and
SwiGLU, so the mapping is a renaming plus splitting the fused q/k/v and gate/up projections.
Bidirectional ones (masked, diffusion, and a hybrid run's masked view in OUT/masked_lm/) ship a
small trust_remote_code class loadable by `AutoModelForMaskedLM`. The tokenizer is written as a PreTrainedTokenizerFast.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from hybridlm.errors import UserError
from hybridlm.runs import load_run
from hybridlm.tokenizer import TOKENIZER_FILE, _write_hf_files, special_ids


def llama_state_dict(model) -> dict[str, torch.Tensor]:
    cfg = model.cfg
    sd = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight}
    for i, b in enumerate(model.blocks):
        pre = f"model.layers.{i}."
        q, k, v = b.attn.qkv.weight.split(cfg.d_model, 0)
        gate, up = b.mlp.gate_up.weight.split(cfg.d_ffn, 0)
        sd.update({
            pre + "self_attn.q_proj.weight": q, pre + "self_attn.k_proj.weight": k, pre + "self_attn.v_proj.weight": v,
            pre + "self_attn.o_proj.weight": b.attn.proj.weight,
            pre + "mlp.gate_proj.weight": gate, pre + "mlp.up_proj.weight": up, pre + "mlp.down_proj.weight": b.mlp.down.weight,
            pre + "input_layernorm.weight": b.attn_norm.weight, pre + "post_attention_layernorm.weight": b.mlp_norm.weight,
        })
    return {k: v.detach().float().contiguous().clone() for k, v in sd.items()}


def llama_config(model) -> dict:
    cfg = model.cfg
    ids = special_ids()
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ffn,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head,
        "head_dim": cfg.d_model // cfg.n_head,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"],
        "torch_dtype": "float32",
    }


def _export_masked(run, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    templates = Path(__file__).parent / "export_templates"
    for name in ("configuration_hybridlm.py", "modeling_hybridlm.py"):
        shutil.copyfile(templates / name, out / name)
    state = {k: v.detach().float().contiguous().clone() for k, v in run.model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    ids = special_ids()
    config = {
        **run.model.cfg.to_dict(),
        "architectures": ["HybridLMForMaskedLM"],
        "model_type": "hybridlm",
        "objective": run.objective.name,
        "mntp_shift": run.objective.infill_shift == 1,
        "auto_map": {"AutoConfig": "configuration_hybridlm.HybridLMConfig",
                     "AutoModelForMaskedLM": "modeling_hybridlm.HybridLMForMaskedLM"},
        "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"],
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(run.run.tokenizer_path, out)


def _write_tokenizer(src: Path, out: Path):
    """The run's tokenizer, adding <s> before each text as every training document began, so that
    tools that tokenize with special tokens (the BabyLM pipeline, lm-eval) condition on it as hlm does."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(src))
    template = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", special_ids()["bos"])])
    tok.post_processor = processors.Sequence([tok.post_processor, template]) if tok.post_processor is not None else template
    tok.save(str(out / TOKENIZER_FILE))
    _write_hf_files(out)


def export_run(run_dir, out_dir) -> Path:
    """Write the run as the Hugging Face model(s) its objective exports to (`Objective.export_*`)."""
    run = load_run(run_dir)
    objective = run.objective
    out = Path(out_dir)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"--out {out} exists and is not a folder; choose a new --out")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new --out")
    if not objective.export_causal_lm and objective.export_masked_lm is None:
        raise UserError(f"a {objective.name} run has no Hugging Face export")
    out.mkdir(parents=True, exist_ok=True)
    if objective.export_causal_lm:
        save_file(llama_state_dict(run.model), str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(llama_config(run.model), indent=2))
        (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}, indent=2))
    if objective.export_masked_lm is not None:
        # bidirectional attention: a small trust_remote_code class (AutoModelForMaskedLM); a hybrid
        # run gets both, the masked view in a sub-folder (GPT-BERT's two modes of one model)
        _export_masked(run, out / objective.export_masked_lm if objective.export_masked_lm else out)
    _write_tokenizer(run.run.tokenizer_path, out)
    (out / "hybridlm.json").write_text(json.dumps({"objective": objective.name, "step": run.step, "source": str(run.path)}, indent=2))
    return out

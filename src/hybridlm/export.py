"""Export a run as a Hugging Face `transformers` model directory.

What a run exports to is its objective's answer. Causal-attention models (causal, hybrid) become
`LlamaForCausalLM` with no custom code: the core model uses Llama's RMSNorm, rotary convention and
SwiGLU, so the mapping is a renaming plus splitting the fused q/k/v and gate/up projections.
Bidirectional ones (masked, diffusion, and a hybrid run's masked view in OUT/masked_lm/) ship a
small trust_remote_code class loadable by `AutoModelForMaskedLM`; an MNTP view (hybrid, mntp) keeps
GPT-BERT's layout (position i predicts token i+1), as the official pipeline's `mntp` backend reads
it. The tokenizer is written as a PreTrainedTokenizerFast.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import torch
from safetensors.torch import save_file

from hybridlm.checkpoint import checkpoint_state
from hybridlm.errors import UserError
from hybridlm.files import building, check_out_folder
from hybridlm.hf_import import copy_original_tokenizer, imported, original_rows
from hybridlm.objectives import ExportView, Infill
from hybridlm.runs import RunDir, load_run
from hybridlm.tokenizer import TOKENIZER_FILE, load_tokenizer, special_ids, with_bos, write_hf_files


def llama_state_dict(model, imported: dict | None = None) -> dict[str, torch.Tensor]:
    """The model under transformers' Llama names; `imported` (an imported run's import.json): the vocabulary back
    in the original model's order, without the tokens hlm added."""
    cfg = model.cfg
    vocab = (lambda w: original_rows(w, imported)) if imported else (lambda w: w)  # noqa: E731
    sd = {"model.embed_tokens.weight": vocab(model.embed.weight), "model.norm.weight": model.norm.weight}
    if not cfg.tie_embeddings:
        sd["lm_head.weight"] = vocab(model.lm_head.weight)
    kv = cfg.kv_heads * (cfg.d_model // cfg.n_head)
    for i, b in enumerate(model.blocks):
        pre = f"model.layers.{i}."
        q, k, v = b.attn.qkv.weight.split([cfg.d_model, kv, kv], 0)
        gate, up = b.mlp.gate_up.weight.split(cfg.d_ffn, 0)
        sd.update(
            {
                pre + "self_attn.q_proj.weight": q,
                pre + "self_attn.k_proj.weight": k,
                pre + "self_attn.v_proj.weight": v,
                pre + "self_attn.o_proj.weight": b.attn.proj.weight,
                pre + "mlp.gate_proj.weight": gate,
                pre + "mlp.up_proj.weight": up,
                pre + "mlp.down_proj.weight": b.mlp.down.weight,
                pre + "input_layernorm.weight": b.attn_norm.weight,
                pre + "post_attention_layernorm.weight": b.mlp_norm.weight,
            }
        )
    return {k: v.detach().float().contiguous().clone() for k, v in sd.items()}


def llama_config(model, imported: dict | None = None) -> dict:
    cfg = model.cfg
    ids = imported["token_ids"] if imported else special_ids()
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": imported["vocab_size"] if imported else cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ffn,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.d_model // cfg.n_head,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
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
    # the extra multi-token heads are training-only: an export is the next-token model
    state = {
        k: v.detach().float().contiguous().clone()
        for k, v in run.model.state_dict().items()
        if not k.startswith("mtp.")
    }
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    ids = special_ids()
    config = {
        **{k: v for k, v in run.model.cfg.to_dict().items() if k != "mtp_heads"},
        "architectures": ["HybridLMForMaskedLM"],
        "model_type": "hybridlm",
        "objective": run.objective.name,
        # GPT-BERT's layout: an MNTP model's logits at position i predict token i+1 (no shift in the
        # export), which the official pipeline's mntp backend reads at i-1 (score it with --backend mntp)
        "mntp": run.objective.capabilities.infill is Infill.NEXT_TOKEN,
        "auto_map": {
            "AutoConfig": "configuration_hybridlm.HybridLMConfig",
            "AutoModelForMaskedLM": "modeling_hybridlm.HybridLMForMaskedLM",
        },
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"],
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(run.dir.tokenizer_path, out)


def _write_tokenizer(src: Path, out: Path):
    with_bos(load_tokenizer(src)).save(str(out / TOKENIZER_FILE))
    write_hf_files(out)


def export_run(run_dir, out_dir, checkpoint: str | None = None, weights: str = "auto") -> Path:
    """Write the run (its latest checkpoint, or `checkpoint`) as the Hugging Face model(s) its
    objective exports to (`Objective.export_*`): its moving average of the weights where it keeps one
    (weights="auto"; "raw": as trained)."""
    out = Path(out_dir)
    check_out_folder(out)
    run = load_run(run_dir, checkpoint=checkpoint, weights=weights)
    _check_exportable(run)
    with building(out) as tmp:  # complete, or not there at all
        _write_export(run, tmp)
    return out


def _check_exportable(run) -> None:
    if not run.objective.capabilities.export:
        raise UserError(
            f"a {run.objective.name} run has no Hugging Face export (no transformers model holds what it learned); "
            "evaluate and sample it with hlm eval and hlm generate"
        )


def _write_export(run, out: Path) -> None:
    objective, caps = run.objective, run.objective.capabilities
    # an imported model (or one trained from it) exports as its causal LM with the original's vocabulary and
    # tokenizer; a bidirectional view keeps hlm's (its <mask> is a token the original lacks)
    source = imported(run.path)
    if ExportView.CAUSAL_LM in caps.export:
        config = llama_config(run.model, source)
        save_file(llama_state_dict(run.model, source), str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(config, indent=2))
        (out / "generation_config.json").write_text(
            json.dumps({k: config[f"{k}_token_id"] for k in ("bos", "eos", "pad")}, indent=2)
        )
    if caps.masked_lm_folder is not None:
        # bidirectional attention: a small trust_remote_code class (AutoModelForMaskedLM); a hybrid
        # run gets both, the masked view in a sub-folder (GPT-BERT's two modes of one model)
        _export_masked(run, out / caps.masked_lm_folder)
    if source and ExportView.CAUSAL_LM in caps.export:
        copy_original_tokenizer(run.path, out)
    else:
        _write_tokenizer(run.dir.tokenizer_path, out)
    (out / "hybridlm.json").write_text(
        json.dumps(
            {
                "objective": objective.name,
                "options": run.config.objective_options(),
                "step": run.step,
                "words_seen": run.words_seen,
                "weights": run.weights,
                "source": str(run.path),
            },
            indent=2,
        )
    )


# ---------------------------------------------------------------- BabyLM 2025: one branch per checkpoint
HUB_CACHE = ".hub-cache"  # inside the exported repository, ignored by its git


def _git(repo: Path, *args) -> str:
    cmd = [
        "git",
        "-C",
        str(repo),
        "-c",
        "user.name=hybridlm",
        "-c",
        "user.email=hybridlm@localhost",
        "-c",
        "commit.gpgsign=false",
        *args,
    ]
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        raise UserError(
            "--all-checkpoints needs git on the PATH (it writes a git repository with one branch per checkpoint)"
        ) from None
    except subprocess.CalledProcessError as e:
        raise UserError(
            f"git {args[0]} failed in {repo}: {(e.stderr or e.stdout).strip().splitlines()[-1][:160]}"
        ) from None


def export_all_checkpoints(run_dir, out_dir, repo_id: str | None = None, weights: str = "auto") -> list[str]:
    """The run as a Hugging Face model repository with BabyLM 2025's branches: `chck_1M`, `chck_2M`, ...
    hold the words_N checkpoints, `main` the run's final weights. OUT is a git repository (push it
    to the hub as it is: `git push --all`). Because transformers ignores `revision=` for a local
    folder, OUT/.hub-cache also holds the same commits laid out as the hub's cache, so that
    `from_pretrained(repo_id, revision="chck_2M", cache_dir="OUT/.hub-cache")` loads a branch with
    no network (and the official pipeline's --revision_name works with HF_HUB_CACHE=OUT/.hub-cache).
    Returns the branches written besides main."""
    run = RunDir(run_dir).require()
    found = run.words_checkpoints()
    if not found:
        raise UserError(
            f"run {run} has no words_N checkpoints; train it with --checkpoint-words or --checkpoint-schedule"
        )
    out = Path(out_dir)
    check_out_folder(out)
    repo_id = repo_id or f"hybridlm/{Path(run_dir).resolve().name}"
    latest = run.latest_checkpoint()
    plan = [(p.name, "chck_" + p.name[len("words_") :], s.get("words_seen")) for p, s in found]
    if latest is not None and checkpoint_state(latest).get("step", 0) > found[-1][1].get("step", 0):
        plan.append((latest.name, None, None))  # the final weights, past the last threshold: main only
    with building(out) as repo:  # a killed export leaves no repository that looks complete at OUT
        _git(repo, "init", "-q")
        _git(repo, "symbolic-ref", "HEAD", "refs/heads/main")
        (repo / ".git" / "info").mkdir(parents=True, exist_ok=True)
        with open(repo / ".git" / "info" / "exclude", "a") as f:
            f.write(f"/{HUB_CACHE}/\n")
        (repo / ".gitattributes").write_text(
            "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        )  # as hub repositories have
        cache = repo / HUB_CACHE / ("models--" + repo_id.replace("/", "--"))
        (cache / "refs").mkdir(parents=True)
        for name, branch, words in plan:
            for p in repo.iterdir():  # replace, never rewrite in place: the cache's snapshots may share the files
                if p.name not in (".git", HUB_CACHE, ".gitattributes"):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            loaded = load_run(run_dir, checkpoint=name, weights=weights)
            _check_exportable(loaded)
            _write_export(loaded, repo)
            _git(repo, "add", "-A")
            _git(
                repo, "commit", "-q", "-m", f"{name}" + (f": {words:,} words seen" if words is not None else " (final)")
            )
            sha = _git(repo, "rev-parse", "HEAD")
            if branch:
                _git(repo, "branch", "-f", branch)
                (cache / "refs" / branch).write_text(sha)
            shutil.copytree(repo, cache / "snapshots" / sha, ignore=shutil.ignore_patterns(".git", HUB_CACHE))
        (cache / "refs" / "main").write_text(sha)
    return [branch for _, branch, _ in plan if branch]

"""`hlm import`: a local Llama-family causal LM (Llama, SmolLM2, Mistral without a sliding window) becomes an hlm run
whose `causal` view computes the same logits, so that every objective can start from it (`hlm train --init-from`).

Weights come from safetensors (or a GGUF file, which transformers reads with the `gguf` package), never a pickle,
and never the folder's own code. The model maps by renaming, as hlm's export to `LlamaForCausalLM` does backwards:
q/k/v and gate/up are fused, grouped-query attention, an untied head, rope theta and the norm's epsilon carried
over; a checkpoint with anything else (attention biases, rope scaling, another head size) is one line naming it.

Special tokens: hlm's objectives keep their five roles at ids 0-4 (pad, bos, eos, mask, unk: masking, uniform
noise and the scorers rely on every other id being text). The importer therefore maps each role onto the model's
own token (bos: its BOS; eos: its EOS; pad, unk: its own where distinct) and moves those tokens to ids 0-4, spelled
with hlm's names; a role the model lacks, or shares with an earlier one (SmolLM2's `<|endoftext|>` is BOS, EOS and
UNK at once), is a new token, its embedding (and head) row the mean of the model's rows, or, for an end of text
the model spells with its BOS, a copy of that row. Every other token keeps its string and merges; its id moves by
the permutation recorded in RUN/imported/import.json, which `hlm export` inverts, writing the original tokenizer
(RUN/imported/) and the original vocabulary's rows: an imported or adapted causal model exports back to the
checkpoint it came from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from hybridlm.errors import UserError
from hybridlm.files import building, check_out_folder
from hybridlm.hf import _one_line, transformers_module
from hybridlm.tokenizer import BOS, EOS, MASK, PAD, UNK, load_tokenizer

IMPORTED = "imported"  # RUN/imported/: the original tokenizer and import.json
ROLES = ("pad", "bos", "eos", "mask", "unk")  # hlm's ids 0..4, in SPECIAL_TOKENS' order
NAMES = dict(zip(ROLES, (PAD, BOS, EOS, MASK, UNK)))
ARCHITECTURES = ("llama", "mistral")


# ---------------------------------------------------------------- the checkpoint
def _fits(config) -> dict:
    """hlm's model keys for a transformers config, or one line naming what does not map."""
    kind = getattr(config, "model_type", "?")
    if kind not in ARCHITECTURES:
        raise UserError(
            f"hlm import reads Llama-family causal LMs ({', '.join(ARCHITECTURES)}); this is a {kind!r} model"
        )
    n_head, d_model = config.num_attention_heads, config.hidden_size
    head_dim = getattr(config, "head_dim", None) or d_model // n_head
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None)) if isinstance(rope, dict) else None
    misfits = [
        (getattr(config, "attention_bias", False), "attention biases"),
        (getattr(config, "mlp_bias", False), "MLP biases"),
        (head_dim * n_head != d_model, f"a head size {head_dim} other than hidden_size / heads"),
        ((rope.get("rope_type") or rope.get("type") or "default") != "default", "rope scaling"),
        (getattr(config, "hidden_act", "silu") != "silu", f"the activation {getattr(config, 'hidden_act', '?')}"),
        (getattr(config, "sliding_window", None) not in (None, 0), "sliding-window attention"),
        (getattr(config, "pretraining_tp", 1) not in (None, 1), "tensor-parallel slices (pretraining_tp)"),
        (theta is None, "no rope theta"),
        (head_dim % 2, "an odd head size"),
    ]
    for wrong, what in misfits:
        if wrong:
            raise UserError(f"hlm import: the checkpoint has {what}, which hlm's model does not; nothing written")
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    return {
        "n_layer": config.num_hidden_layers,
        "n_head": n_head,
        "d_model": d_model,
        "d_ffn": config.intermediate_size,
        "max_seq_len": config.max_position_embeddings,
        "rope_theta": float(theta),
        "norm_eps": float(config.rms_norm_eps),
        "n_kv_heads": 0 if n_kv == n_head else n_kv,
        "tie_embeddings": bool(getattr(config, "tie_word_embeddings", True)),
    }


def _load(folder: Path, gguf_file: str | None, weights: bool = True):
    """(config, state dict in fp32, fast tokenizer) of the folder, through transformers without remote code;
    without `weights`, (config, None, tokenizer): the tokenizer's mapping needs only those."""
    transformers = transformers_module()
    if not folder.is_dir():
        raise UserError(f"--hf-model {folder} is not a folder")
    kw = {"local_files_only": True, "trust_remote_code": False}
    if gguf_file:
        if not (folder / gguf_file).is_file():
            raise UserError(f"--gguf-file {gguf_file} is not a file in {folder}")
        try:
            import gguf  # noqa: F401  (transformers reads GGUF through it)
        except ImportError:
            raise UserError("reading a GGUF file needs the gguf package: pip install gguf") from None
        kw["gguf_file"] = gguf_file
    elif not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a local Hugging Face model directory (no config.json; GGUF: --gguf-file)")
    elif weights and not any(folder.glob("*.safetensors")):
        raise UserError(f"{folder} holds no .safetensors weights; hlm never loads pickled ones (convert them first)")
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        config = transformers.AutoConfig.from_pretrained(folder, **kw)
        _fits(config)  # before the weights are read
        if weights:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.float32, **({} if gguf_file else {"use_safetensors": True}), **kw
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **kw)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot load a causal LM from {folder}: {_one_line(e)}") from None
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{folder}: its tokenizer has no tokenizer.json (a fast tokenizer); hlm reads only that kind")
    if not weights:
        return config, None, tokenizer
    return model.config, {k: v.detach().float() for k, v in model.state_dict().items()}, tokenizer


# ---------------------------------------------------------------- the vocabulary


def _plan(config, tokenizer, vocab_size: int) -> tuple[list[int], dict]:
    """plan_vocabulary for a transformers config and fast tokenizer: the roles the tokenizer names, BOS and EOS
    from the config where the tokenizer is silent."""
    roles = {role: getattr(tokenizer, f"{role}_token_id", None) for role in ROLES}
    for role in ("bos", "eos"):  # the model's config says which ids it was trained with, where the tokenizer is silent
        roles[role] = roles[role] if roles[role] is not None else getattr(config, f"{role}_token_id", None)
    if isinstance(roles["eos"], list):
        roles["eos"] = roles["eos"][0]
    names = {i: t for t, i in tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True).items()}
    return plan_vocabulary(roles, vocab_size, {i: t for i, t in names.items() if i not in roles.values()})


def is_hf_model_folder(path) -> bool:
    """A transformers model folder (config.json naming a model_type), not an hlm run or tokenizer folder."""
    f = Path(path) / "config.json"
    try:
        return f.is_file() and isinstance(json.loads(f.read_text()).get("model_type"), str)
    except (OSError, ValueError, AttributeError):
        return False


def hlm_tokenizer_json(hf_model) -> str:
    """The tokenizer.json `hlm import` would give a run made from this model folder (the roles at ids 0..4), read
    without the weights: `hlm prepare --tokenizer HF_DIR` tokenizes as the imported run does."""
    config, _, tokenizer = _load(Path(hf_model), None, weights=False)
    order, _ = _plan(config, tokenizer, config.vocab_size)
    return rebuild_tokenizer(tokenizer.backend_tokenizer.to_str(), order)


def plan_vocabulary(roles: dict[str, int | None], vocab_size: int, names: dict[int, str]) -> tuple[list[int], dict]:
    """(order, how): order[new id] = the model's id at it, -1 for a new token; how[role] = (its source id or
    None, "token" | "copy" | "mean"). A role takes the model's token for it unless an earlier role took that token;
    an end of text the model spells with its BOS becomes a copy of that row."""
    taken: dict[int, str] = {}
    head, how = [], {}
    for role in ("bos", "eos", "pad", "unk", "mask"):  # the roles that matter most first
        source = roles.get(role)
        if source is not None and not 0 <= source < vocab_size:
            raise UserError(f"the tokenizer's {role} id {source} lies outside the model's {vocab_size} rows")
        if source is not None and source not in taken:
            taken[source] = role
            how[role] = (source, "token")
        elif source is not None and role == "eos":
            how[role] = (source, "copy")  # e.g. <|endoftext|> both starts and ends a text
        else:
            how[role] = (None, "mean")
    for role in ROLES:
        head.append(how[role][0] if how[role][1] == "token" else -1)
    order = head + [i for i in range(vocab_size) if i not in taken]
    for role in ROLES:
        if how[role][1] != "token" and NAMES[role] in names.values():
            raise UserError(
                f"the model's vocabulary spells an ordinary token {NAMES[role]!r}, the name hlm gives its new {role} "
                "token; hlm cannot import this tokenizer"
            )
    return order, how


def rebuild_tokenizer(tokenizer_json: str, order: list[int]) -> str:
    """The model's tokenizer.json with ids moved by `order` (new id -> old id, -1: a new token), the role tokens
    at 0..4 spelled with hlm's names, new ones added as special tokens, and no post-processor (hlm adds <s>
    itself)."""
    data = json.loads(tokenizer_json)
    model = data.get("model", {})
    if model.get("type") not in ("BPE", "WordPiece") or not isinstance(model.get("vocab"), dict):
        raise UserError(f"hlm import reads BPE and WordPiece tokenizers (this one is {model.get('type')!r})")
    new_of_old = {old: new for new, old in enumerate(order) if old >= 0}
    renamed = {order[i]: NAMES[role] for i, role in enumerate(ROLES) if order[i] >= 0}
    id_to_token = {i: t for t, i in model["vocab"].items()}
    for t in data.get("added_tokens", []):
        id_to_token.setdefault(t["id"], t["content"])
    merges = model.get("merges") or []
    used = {piece for merge in merges for piece in (merge.split(" ") if isinstance(merge, str) else merge)}
    clash = [id_to_token.get(old) for old in renamed if id_to_token.get(old) in used]
    if clash:
        raise UserError(f"the role token {clash[0]!r} takes part in BPE merges; hlm cannot import this tokenizer")
    model["vocab"] = {renamed.get(i, t): new_of_old[i] for t, i in model["vocab"].items() if i in new_of_old}
    model["vocab"].update({NAMES[role]: i for i, role in enumerate(ROLES)})  # an added token's id is its vocab id
    added = []
    for t in data.get("added_tokens", []):
        if t["id"] in new_of_old:
            added.append({**t, "id": new_of_old[t["id"]], "content": renamed.get(t["id"], t["content"]),
                          **({"special": True} if t["id"] in renamed else {})})  # fmt: skip
    already = {t["id"] for t in data.get("added_tokens", [])}
    for i, role in enumerate(ROLES):
        if order[i] < 0 or order[i] not in already:  # a new token, or a role token that was only in the vocabulary
            added.append({"id": i, "content": NAMES[role], "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True})  # fmt: skip
    spelled = set(model["vocab"].values()) | {t["id"] for t in added}
    for i in range(len(order)):  # rows the tokenizer never produces (a vocabulary padded to a round size)
        if i not in spelled:
            added.append({"id": i, "content": f"<|unused_{order[i]}|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True})  # fmt: skip
            model["vocab"][added[-1]["content"]] = i
    data["added_tokens"] = sorted(added, key=lambda t: t["id"])
    data["post_processor"] = None
    return json.dumps(data, ensure_ascii=False)


def _grow(weight: torch.Tensor, order: list[int], how: dict) -> torch.Tensor:
    """Rows in hlm's order: the model's rows moved, a new role's row the mean of all rows, a copied one a copy."""
    rows = weight[torch.tensor([max(o, 0) for o in order])].clone()
    mean = weight.mean(0)
    for i, role in enumerate(ROLES):
        source, kind = how[role]
        if kind == "mean":
            rows[i] = mean
        elif kind == "copy":
            rows[i] = weight[source]
    return rows


def hlm_state_dict(hf: dict, shape: dict, order: list[int], how: dict) -> dict[str, torch.Tensor]:
    """transformers' Llama weights under hlm's names (q/k/v and gate/up fused), the vocabulary in hlm's order."""
    sd = {"embed.weight": _grow(hf["model.embed_tokens.weight"], order, how), "norm.weight": hf["model.norm.weight"]}
    if not shape["tie_embeddings"]:
        sd["lm_head.weight"] = _grow(hf["lm_head.weight"], order, how)
    for i in range(shape["n_layer"]):
        pre = f"model.layers.{i}."
        attn = [hf[pre + f"self_attn.{p}_proj.weight"] for p in "qkv"]
        sd.update(
            {
                f"blocks.{i}.attn.qkv.weight": torch.cat(attn, 0),
                f"blocks.{i}.attn.proj.weight": hf[pre + "self_attn.o_proj.weight"],
                f"blocks.{i}.mlp.gate_up.weight": torch.cat(
                    [hf[pre + "mlp.gate_proj.weight"], hf[pre + "mlp.up_proj.weight"]], 0
                ),  # fmt: skip
                f"blocks.{i}.mlp.down.weight": hf[pre + "mlp.down_proj.weight"],
                f"blocks.{i}.attn_norm.weight": hf[pre + "input_layernorm.weight"],
                f"blocks.{i}.mlp_norm.weight": hf[pre + "post_attention_layernorm.weight"],
            }
        )
    return {k: v.contiguous() for k, v in sd.items()}


# ---------------------------------------------------------------- the command
def import_model(hf_model, out, gguf_file: str | None = None, max_seq_len: int = 0) -> dict:
    """Write OUT as an hlm run (objective causal, checkpoint step_0000000) holding the model; returns import.json."""
    from hybridlm.checkpoint import save_checkpoint
    from hybridlm.config import merge_config
    from hybridlm.model import build_model
    from hybridlm.runs import RunDir

    out, folder = Path(out), Path(hf_model)
    check_out_folder(out)
    config, hf, tokenizer = _load(folder, gguf_file)
    shape = _fits(config)
    if max_seq_len:
        shape["max_seq_len"] = max_seq_len
    vocab_size = hf["model.embed_tokens.weight"].shape[0]
    order, how = _plan(config, tokenizer, vocab_size)
    state = hlm_state_dict(hf, shape, order, how)
    cfg = merge_config(
        {"objective": "causal", "preset": "tiny", "model": shape, "seq_len": min(512, shape["max_seq_len"])}
    )
    model = build_model(cfg.preset, len(order), cfg.model_overrides(), min_seq_len=cfg.max_len())
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"hlm import: the weights do not fit ({_one_line(e)}); nothing written") from None
    record = {
        "source": str(folder.resolve()),
        "gguf_file": gguf_file,
        "model_type": config.model_type,
        "vocab_size": vocab_size,
        "order": order,  # hlm id -> the model's id (-1: a token hlm added)
        "roles": {role: {"id": ROLES.index(role), "source": s, "init": k} for role, (s, k) in how.items()},
        "token_ids": {"bos": config.bos_token_id, "eos": config.eos_token_id, "pad": config.pad_token_id},
    }
    with building(out) as tmp:  # complete, or nothing at OUT
        original = tmp / IMPORTED
        tokenizer.save_pretrained(str(original))  # the original tokenizer, as transformers writes it
        (original / "import.json").write_text(json.dumps(record))
        (tmp / "hlm-tokenizer.json").write_text(
            rebuild_tokenizer(tokenizer.backend_tokenizer.to_str(), order), encoding="utf-8"
        )
        load_tokenizer(tmp / "hlm-tokenizer.json")  # the roles at 0..4, readable by hlm
        run = RunDir(tmp)
        shutil.move(str(tmp / "hlm-tokenizer.json"), str(run.tokenizer_path))
        run.write_config(cfg)
        no_optimizer = {"state": {}, "param_groups": []}  # nothing trained here yet
        save_checkpoint(tmp, 0, state, no_optimizer, {"step": 0, "words_seen": 0, "tokens_seen": 0})
    return record


def imported(run_dir) -> dict | None:
    """RUN/imported/import.json of an imported run (or one trained from it), None for hlm's own runs."""
    path = Path(run_dir) / IMPORTED / "import.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        order = record["order"]
        assert isinstance(order, list) and all(isinstance(i, int) for i in order)
    except (ValueError, KeyError, AssertionError, TypeError):
        raise UserError(f"{path} is damaged; re-import the model (hlm import)") from None
    return record


def original_rows(weight: torch.Tensor, record: dict) -> torch.Tensor:
    """Rows of an hlm-ordered weight in the original model's order, the tokens hlm added left out."""
    original = torch.empty(record["vocab_size"], *weight.shape[1:], dtype=weight.dtype)
    for new, old in enumerate(record["order"]):
        if old >= 0:
            original[old] = weight[new]
    return original


def carry_import(source_run, new_run) -> None:
    """A run warm-started from an imported one keeps RUN/imported/ (so it exports with the original vocabulary)."""
    src = Path(source_run) / IMPORTED
    if imported(source_run) is None:
        return
    (Path(new_run) / IMPORTED).mkdir()
    for f in src.iterdir():
        if f.is_file() and not f.is_symlink():
            shutil.copyfile(f, Path(new_run) / IMPORTED / f.name)


def copy_original_tokenizer(run_dir, out: Path) -> None:
    src = Path(run_dir) / IMPORTED
    for f in src.iterdir():
        if f.is_file() and f.name != "import.json" and not f.is_symlink():
            shutil.copyfile(f, out / f.name)


__all__ = ["import_model", "imported", "original_rows", "carry_import", "copy_original_tokenizer"]

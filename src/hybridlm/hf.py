"""Local Hugging Face models, loaded one way for every command (scoring, teachers, fine-tuning).

No hub: a folder on disk. Code shipped inside a model folder runs only when the user asks
(`trust_remote_code`); weights load from safetensors where the caller asks (never a pickle it did not
ask for). A folder from elsewhere can fail in any layer of transformers: that is one line naming the
folder, not a traceback.
"""

from __future__ import annotations

from pathlib import Path

from hybridlm.errors import UserError


def transformers_module():
    try:
        import transformers  # an optional extra: imported only where a Hugging Face model is used
    except ImportError:
        raise UserError("Hugging Face models need transformers: pip install 'hybridlm[hf]'") from None
    return transformers


def _one_line(e: Exception) -> str:
    return (str(e).splitlines()[0] if str(e) else type(e).__name__)[:160]


def load_hf_model(path, auto_class, what: str, trust_remote_code: bool = False, new_head: tuple = (), **kw):
    """(config, model) of the model folder `path`. auto_class: the name of a transformers Auto class,
    or a function of the config that names one (a masked or causal LM by its architecture). Strict: a
    weight the model needs and the folder lacks (or one it holds that the model has no place for) is an
    error, not a freshly initialised tensor; `new_head` names the prefixes a caller adds itself (a
    classifier's head)."""
    transformers = transformers_module()
    p = Path(path)
    if not (p / "config.json").is_file():
        raise UserError(f"{p} is not a local Hugging Face model directory (no config.json)")
    trust = bool(trust_remote_code)
    transformers.utils.logging.disable_progress_bar()  # hlm shows its own progress; an error stays one line
    verbosity = transformers.utils.logging.get_verbosity()
    # its load report (missing or unexpected weights) is hlm's own one-line error below, not a table on stderr
    transformers.utils.logging.set_verbosity_error()
    try:
        config = transformers.AutoConfig.from_pretrained(p, trust_remote_code=trust, local_files_only=True)
        name = auto_class(config) if callable(auto_class) else auto_class
        model, info = getattr(transformers, name).from_pretrained(
            p, trust_remote_code=trust, local_files_only=True, output_loading_info=True, **kw
        )
    except Exception as e:
        if "trust_remote_code" in str(e) or "custom code" in str(e):
            raise UserError(f"{p} ships its own model code; read it, then pass --trust-remote-code to run it") from None
        raise UserError(f"cannot load {what} in {p}: {_one_line(e)}") from None
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    missing = [k for k in info.get("missing_keys", ()) if not k.startswith(tuple(new_head))]
    unexpected = [k for k in info.get("unexpected_keys", ()) if not k.startswith(tuple(new_head))]
    mismatched = [k for k, *_ in info.get("mismatched_keys", ())]
    problems = (
        ("lacks weights the model needs", missing),
        ("holds weights the model has no place for", unexpected),
        ("holds weights of the wrong shape", mismatched),
    )
    for kind, keys in problems:
        if keys:
            raise UserError(
                f"{p}: its weights do not match its config.json: it {kind} ({', '.join(keys[:3])}"
                f"{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}); use the folder the weights came with"
            )
    return config, model


def load_hf_tokenizer(path, trust_remote_code: bool = False):
    transformers = transformers_module()
    try:
        return transformers.AutoTokenizer.from_pretrained(
            Path(path), trust_remote_code=bool(trust_remote_code), local_files_only=True
        )
    except Exception as e:
        raise UserError(f"cannot load the tokenizer in {path}: {_one_line(e)}") from None

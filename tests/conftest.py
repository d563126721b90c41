"""Shared fixtures: a grammar corpus, a small tokenizer and prepared data, a tiny run per objective and
tiny transformers models, each made once per session. Plain helpers live in helpers.py."""

import os
from pathlib import Path

import pytest
import torch
from helpers import HF_SHAPE, run_cli, tiny_config, tiny_hf_model

from hybridlm.data import prepare
from hybridlm.grammar import write_corpus
from hybridlm.tokenizer import train_tokenizer

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# hlm runs in this process too (the `cli` fixture): no tokenizer threads that a later fork would warn about
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# the harness and datasets read local task files here: never a hub (CI reaches package registries only)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", n_words=40_000, seed=3)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer([corpus], vocab_size=320, out_dir=out)
    return out


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, corpus, tokenizer_dir) -> Path:
    out = tmp_path_factory.mktemp("data")
    prepare([corpus], tokenizer_dir, out, val_fraction=0.05)
    return out


@pytest.fixture
def cli(capsys):
    """hlm in this process, like `hlm` (check=True by default)."""

    def call(*args, check=True):
        return run_cli(capsys, *args, check=check)

    return call


@pytest.fixture(scope="session")
def runs(tmp_path_factory, data_dir) -> dict:
    """One briefly trained tiny run per objective."""
    from hybridlm.train import train

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for objective in ("causal", "masked", "hybrid", "diffusion"):
        cfg = tiny_config(data_dir, root / objective, objective=objective, max_steps=30, lr=3e-3, eval_interval=0,
                          log_interval=10)  # fmt: skip
        train(cfg, quiet=True)
        out[objective] = root / objective
    return out


@pytest.fixture(scope="session")
def hf_causal(tmp_path_factory, tokenizer_dir):
    """A tiny random Llama with our tokenizer (a context of 1024: the BabyLM reading items are long)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(**{**HF_SHAPE, "max_position_embeddings": 1024}, num_key_value_heads=4,
                                   bos_token_id=1, eos_token_id=2)  # fmt: skip
    return tiny_hf_model(tmp_path_factory.mktemp("hf_causal"), transformers.LlamaForCausalLM, cfg, tokenizer_dir)


@pytest.fixture(scope="session")
def hf_masked(tmp_path_factory, tokenizer_dir):
    """A tiny random BERT with our tokenizer."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(**HF_SHAPE)
    return tiny_hf_model(tmp_path_factory.mktemp("hf_masked"), transformers.BertForMaskedLM, cfg, tokenizer_dir)

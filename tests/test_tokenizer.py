import pytest
from helpers import assert_one_line_error

from hybridlm.errors import UserError
from hybridlm.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_tokenizer


def test_special_tokens_have_fixed_ids(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert [tok.token_to_id(s) for s in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.get_vocab_size() == 320


def test_roundtrip_and_no_unknown_bytes(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    text = "The cats near the dog sleep. Ünïcödé → ok"
    ids = tok.encode(text).ids
    assert 4 not in ids  # byte-level BPE never needs <unk>
    assert tok.decode(ids).strip() == text


def test_loads_in_transformers(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    ours = load_tokenizer(tokenizer_dir)
    text = "the boys see themselves ."
    assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(text).ids
    assert (hf.mask_token_id, hf.bos_token_id, hf.pad_token_id) == (3, 1, 0)


def test_wordpiece_option(tmp_path, corpus):
    tok = train_tokenizer([corpus], vocab_size=200, out_dir=tmp_path, kind="wordpiece")
    assert tok.token_to_id("<mask>") == 3
    assert "cat" in tok.decode(tok.encode("the cat sleeps").ids)


def test_bad_inputs(cli, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(UserError, match="empty"):
        train_tokenizer([empty], 300, tmp_path / "o")
    with pytest.raises(UserError, match="not UTF-8"):
        train_tokenizer([latin], 300, tmp_path / "o")
    assert_one_line_error(
        cli(
            "tokenizer",
            "train",
            "--input",
            tmp_path / "nope.txt",
            "--vocab-size",
            300,
            "--out",
            tmp_path / "o",
            check=False,
        ),
        "not found",
    )
    assert_one_line_error(
        cli("tokenizer", "train", "--input", latin, "--vocab-size", 300, "--out", tmp_path / "o", check=False),
        "latin.txt:1",
        "UTF-8",
    )

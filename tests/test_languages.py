"""BabyLM 2026's multilingual budget: languages, byte premiums and English-equivalent words (issue 41)."""

import json

import numpy as np
import pytest
from helpers import (
    assert_one_line_error,
    assert_train_refused,
    hlm,
    metric_rows,
    tiny_flags,
    torchrun,
    train_until_killed,
)

from hybridlm.data import PackedTokens, bytes_per_token, prepare
from hybridlm.errors import UserError
from hybridlm.languages import language
from hybridlm.tokenizer import load_tokenizer

# the facts, read from BabyBabelLM's resources/byte_coefs_20240233.tsv
DUTCH, SIMPLIFIED, TRADITIONAL = 1.0516057206199363, 0.9359663917979646, 0.989382544
DUTCH_TEXT = ["de kat zit op de mat en kijkt naar buiten .", "het regent vandaag , zegt oma .", "wij gaan zwemmen !"]
CHINESE_TEXT = ["小猫坐在垫子上。", "今天下雨了,奶奶说。", "我们去游泳吧!"]


def _line_bytes(paragraphs) -> int:
    return sum(len(p.encode("utf-8")) for p in paragraphs)


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory, tokenizer_dir):
    """Dutch as text (--lang nld), Chinese as JSONL rows tagged zho / Hans, English as text (--lang eng)."""
    root = tmp_path_factory.mktemp("multilingual")
    dutch = root / "nld.txt"
    dutch.write_text("".join("\n".join(DUTCH_TEXT[: 1 + i % 3]) + "\n\n" for i in range(600)), encoding="utf-8")
    chinese = root / "zho.jsonl"
    rows = [{"text": "\n".join(CHINESE_TEXT[: 1 + i % 3]), "language": "zho", "script": "Hans"} for i in range(600)]
    chinese.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    english = root / "eng.txt"
    english.write_text("".join("the dogs near the cat sleep .\nthe cat sees a dog .\n\n" for _ in range(500)))
    manifest = prepare([dutch, chinese, english], tokenizer_dir, root / "data", languages=["nld", "nld", "eng"])
    return root, manifest


def test_english_equivalent_words_are_bytes_over_5_43_times_the_premium(multilingual):
    root, manifest = multilingual
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert set(train["languages"]) == {"nld", "zho_hans", "eng"}
    texts = {
        "nld": (root / "nld.txt").read_text(encoding="utf-8").splitlines(),
        "zho_hans": [
            p
            for line in (root / "zho.jsonl").read_text(encoding="utf-8").splitlines()
            for p in json.loads(line)["text"].splitlines()
        ],  # fmt: skip
        "eng": (root / "eng.txt").read_text().splitlines(),
    }
    for lang, factor in (("nld", DUTCH), ("zho_hans", SIMPLIFIED), ("eng", 1.0)):
        words = train["languages"][lang]["words"] + val["languages"][lang]["words"]
        assert words == pytest.approx(_line_bytes(texts[lang]) / (5.43 * factor), rel=1e-12, abs=1e-6), lang
        assert train["languages"][lang]["byte_premium"] == factor
    assert train["words"] == pytest.approx(sum(v["words"] for v in train["languages"].values()))
    # a shard sequence per language: every window is one language's, its words the shard's bytes x factor
    windows = PackedTokens(root / "data", "train", 32)
    by_language = windows.language_words(range(windows.n_windows))
    assert windows.languages == ["eng", "nld", "zho_hans"] and set(by_language) == set(windows.languages)
    assert windows.words(range(windows.n_windows)) == pytest.approx(sum(by_language.values()))
    for shard in manifest["splits"]["train"]["shards"]:
        units = np.fromfile(root / "data" / shard["words_file"], dtype=np.uint16)
        lang = shard["lang"]
        assert len(units) == shard["tokens"]
        assert units.sum() * shard["words_per_unit"] == pytest.approx(train["languages"][lang]["words"])
        n = (shard["tokens"] - 1) // 32  # the windows of this shard cover its first n x 32 tokens
        assert by_language[lang] == pytest.approx(units[: n * 32].sum() * shard["words_per_unit"])


def test_each_character_s_bytes_go_to_one_token(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)  # a byte-level BPE trained on English: CJK splits into byte tokens
    for text in ("小猫坐在垫子上。", "naïve café — 東京 ok 🙂", "a", "de kat", "e\u0301t\u00e9"):
        enc = tok.encode(text, add_special_tokens=False)
        counts = bytes_per_token(text, enc.offsets)
        assert counts.sum() == len(text.encode("utf-8")) and len(counts) == len(enc.ids), text


def test_english_without_languages_counts_whitespace_words_as_before(data_dir, corpus):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    splits = manifest["splits"]
    assert "languages" not in splits["train"] and "words" not in manifest
    assert [s["file"] for s in splits["train"]["shards"]] == ["train_000.bin"]
    assert splits["train"]["words"] + splits["val"]["words"] == sum(len(line.split()) for line in corpus.open())
    assert isinstance(PackedTokens(data_dir, "train", 32).words([0, 1]), int)


def test_language_tags_and_their_byte_premiums():
    assert language("nld").byte_premium == DUTCH and language("NLD").tag == "nld"
    assert language("zho").byte_premium == SIMPLIFIED and language("zho").tag == "zho_hans"  # BabyBabelLM's default
    assert language("zho_hant").byte_premium == TRADITIONAL == language("zho", "Hant").byte_premium
    assert language("zho_Hans") == language("zho-hans") == language("zho", "Hans")
    assert language("eng").words_per_byte == pytest.approx(1 / 5.43)
    assert language("ara_arab").tag == "arb_arab"  # BabyBabelLM's macro-language mapping
    for bad, said in (("xx", "no byte premium"), ("cmn", "several scripts"), ("nld_hans", "nld_latn"), ("", "missing")):
        with pytest.raises(UserError, match=said):
            language(bad)


def test_rows_and_their_refusals(tmp_path, tokenizer_dir, cli):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"content": ["de kat zit op de mat .", "小猫坐在垫子上。"], "language": ["nld", "zho"],
                      "script": ["Latn", "Hant"]})  # fmt: skip
    pq.write_table(pa.concat_tables([table] * 300), tmp_path / "rows.parquet")
    cli("prepare", "--input", tmp_path / "rows.parquet", "--text-field", "content", "--tokenizer", tokenizer_dir,
        "--out", tmp_path / "data")  # fmt: skip
    languages = json.loads((tmp_path / "data" / "manifest.json").read_text())["splits"]["train"]["languages"]
    assert set(languages) == {"nld", "zho_hant"} and languages["zho_hant"]["byte_premium"] == TRADITIONAL

    untagged = tmp_path / "untagged.jsonl"
    untagged.write_text('{"text": "the cat"}\n' * 50)
    tagged = tmp_path / "tagged.jsonl"
    tagged.write_text('{"text": "de kat", "language": "nld"}\n' * 50)
    for args, said in (
        (["--input", untagged, tagged], "no language"),
        (["--input", untagged, "--text-field", "body"], "--text-field"),
        (["--input", tmp_path / "rows.parquet"], "--text-field"),
        (["--input", untagged, "--lang", "klingon"], "no byte premium"),
        (["--input", untagged, tagged, "--lang", "eng", "nld", "zho"], "one per input"),
    ):
        out = cli("prepare", *args, "--tokenizer", tokenizer_dir, "--out", tmp_path / "refused", check=False)
        assert_one_line_error(out, said)
        assert not (tmp_path / "refused").exists()


def test_words_seen_counts_english_equivalent_words_by_language(multilingual, cli, tmp_path):
    root, _ = multilingual
    run = tmp_path / "run"
    flags = tiny_flags(max_steps=6, log_interval=1)
    cli("train", "--data", root / "data", "--out", run, "--checkpoint-words", "150", *flags)
    windows = PackedTokens(root / "data", "train", 32)
    state = json.loads((run / "checkpoints" / "step_0000006" / "state.json").read_text())
    seen = [windows.batch_windows(step, 8, seed=1337) for step in range(6)]  # the trainer's order (seed 1337)
    want = {lang: sum(windows.language_words(ks)[lang] for ks in seen) for lang in windows.languages}
    assert state["language_words"] == pytest.approx(want, rel=1e-12)
    assert state["words_seen"] == pytest.approx(sum(want.values()), rel=1e-12)
    rows = [r for r in metric_rows(run) if "loss" in r]
    assert rows[-1]["words_nld"] == pytest.approx(want["nld"]) and isinstance(rows[-1]["words"], float)
    first = min(r["step"] for r in rows if r["words"] >= 150)
    assert json.loads((run / "checkpoints" / "words_150" / "state.json").read_text())["step"] == first


MIX = ["--mix-languages", "eng:1,nld:1,zho:2", "--checkpoint-words", "2K,3K,4K"]
TARGET = {"eng": 0.25, "nld": 0.25, "zho_hans": 0.5}


def _word_checkpoints(run) -> dict:
    return {p.name: json.loads((p / "state.json").read_text()) for p in (run / "checkpoints").glob("words_*")}


@pytest.fixture(scope="module")
def mixed_run(multilingual, tmp_path_factory):
    root, _ = multilingual
    run = tmp_path_factory.mktemp("mixed") / "run"
    hlm("train", "--data", root / "data", "--out", run, *MIX, *tiny_flags(max_steps=80, checkpoint_interval=20))
    return run


def test_a_mixture_holds_its_shares_at_every_checkpoint(multilingual, mixed_run):
    _, manifest = multilingual
    held = manifest["splits"]["train"]["languages"]  # unmixed, the languages come as the data holds them
    natural = {lang: v["words"] / manifest["splits"]["train"]["words"] for lang, v in held.items()}
    assert max(abs(natural[lang] - TARGET[lang]) for lang in TARGET) > 0.1
    saved = _word_checkpoints(mixed_run)
    assert set(saved) == {"words_2K", "words_3K", "words_4K"}
    for name, state in saved.items():
        shares = {lang: w / state["words_seen"] for lang, w in state["language_words"].items()}
        assert shares == pytest.approx(TARGET, abs=0.01), name
        assert sum(state["language_words"].values()) == pytest.approx(state["words_seen"], rel=1e-12)


@pytest.mark.slow
def test_a_mixture_is_the_same_on_two_processes_and_across_a_kill(multilingual, mixed_run, tmp_path):
    root, _ = multilingual
    torchrun(2, "--data", root / "data", "--out", tmp_path / "two", *MIX, *tiny_flags(max_steps=80,
             checkpoint_interval=20))  # fmt: skip
    killed = tmp_path / "killed"
    args = ["--data", root / "data", *MIX, *tiny_flags(max_steps=80, checkpoint_interval=20)]
    train_until_killed(args, killed, step=40)
    hlm("train", "--out", killed, "--resume")
    want = _word_checkpoints(mixed_run)
    for run in (tmp_path / "two", killed):
        got = _word_checkpoints(run)
        assert set(got) == set(want)
        for name in want:
            assert got[name]["step"] == want[name]["step"]
            assert got[name]["language_words"] == pytest.approx(want[name]["language_words"], rel=1e-12), name


def test_a_multilingual_tokenizer_samples_languages_and_keeps_han_characters_whole(multilingual, tmp_path):
    from hybridlm.languages import language as lang_of
    from hybridlm.tokenizer import _sampled_lines, train_tokenizer

    root, _ = multilingual
    inputs, langs = [root / "nld.txt", root / "zho.jsonl", root / "eng.txt"], ["nld", "nld", "eng"]
    lines, found = _sampled_lines(inputs, langs, "uniform", "text", seed=0)
    assert [x.tag for x in found] == ["eng", "nld", "zho_hans"]
    tags = {"eng": lang_of("eng"), "nld": lang_of("nld"), "zho_hans": lang_of("zho")}

    def words(tag, paragraphs):
        return tags[tag].english_words(sum(len(p.encode("utf-8")) for p in paragraphs))

    han = [p for p in lines if any("\u4e00" <= c <= "\u9fff" for c in p)]
    dutch = [p for p in lines if p in DUTCH_TEXT]
    english = [p for p in lines if p not in han and p not in dutch]
    kept = {"zho_hans": words("zho_hans", han), "nld": words("nld", dutch), "eng": words("eng", english)}
    assert max(kept.values()) / min(kept.values()) < 1.1  # equal shares, each document kept whole or not at all
    unsampled, _ = _sampled_lines(inputs, langs, "", "text", seed=0)
    assert len(unsampled) > len(lines)

    tok = train_tokenizer(inputs, 600, tmp_path / "tok", languages=langs, sample_languages="uniform")
    for text in CHINESE_TEXT + DUTCH_TEXT + ["the cat sees 小猫 ."]:
        enc = tok.encode(text, add_special_tokens=False)
        assert tok.decode(enc.ids).strip() == text
        assert bytes_per_token(text, enc.offsets).sum() == len(text.encode("utf-8"))
        spans = [text[a:b] for a, b in enc.offsets]
        assert all(sum("\u4e00" <= c <= "\u9fff" for c in span) <= 1 for span in spans), spans
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == ("<s>", "</s>", "<pad>")


def test_languages_in_training_refuse_what_does_not_fit(multilingual, data_dir, mixed_run, cli, tmp_path):
    root, _ = multilingual
    mixed = root / "data"
    for data, flags, said in (
        (data_dir, ["--mix-languages", "uniform"], "prepared with languages"),
        (mixed, ["--mix-languages", "eng:1,fra:1"], "does not hold"),
        (mixed, ["--mix-languages", "eng=1"], "LANG:SHARE"),
        (mixed, ["--mix-languages", "eng:0"], "positive share"),
        (mixed, ["--mix-languages", "uniform", "--curriculum", "length"], "one of them"),
        (data_dir, ["--track", "multilingual"], "--lang"),
        (mixed, ["--track", "strict"], "--track multilingual"),
        (mixed, ["--track", "olympic"], "unknown track"),
    ):
        assert_train_refused(cli, data, tmp_path / "refused", flags, said)
    out = cli("train", "--out", mixed_run, "--resume", "--mix-languages", "uniform", check=False)
    assert_one_line_error(out, "mix_languages")
    cli("train", "--data", mixed, "--out", tmp_path / "track", "--track", "multilingual", *tiny_flags(max_steps=2))


def test_a_language_the_tokenizer_does_not_know_is_one_line(corpus, tmp_path, cli):
    from hybridlm.tokenizer import train_tokenizer

    train_tokenizer([corpus], 200, tmp_path / "wordpiece", kind="wordpiece")  # English only: Han is <unk>
    chinese = tmp_path / "zho.txt"
    chinese.write_text("".join(f"{line}\n\n" for line in CHINESE_TEXT * 100), encoding="utf-8")
    out = cli("prepare", "--input", chinese, "--lang", "zho", "--tokenizer", tmp_path / "wordpiece", "--out",
              tmp_path / "data", check=False)  # fmt: skip
    assert_one_line_error(out, "<unk>", "hlm tokenizer train")
    assert not (tmp_path / "data").exists()

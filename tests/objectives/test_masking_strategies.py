"""Masking strategies (issue: data-efficiency knobs): whole words and n-grams of words are masked
whole, checked against the word starts `hlm prepare` stored; a mask ratio drawn per sequence has the
mean it promises; and the options train from the command line."""

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, tiny_flags

from hybridlm.config import TrainConfig
from hybridlm.data import PackedTokens
from hybridlm.objectives import build_objective
from hybridlm.objectives.base import maskable
from hybridlm.tokenizer import load_tokenizer


def _windows_and_starts(data_dir, L=64, n=48):
    """The first n training windows and, per token, whether a word begins in it (stored by prepare)."""
    data = PackedTokens(data_dir, "train", L)
    n = min(n, int(data.cum[1]))
    counts = np.memmap(data.word_files[0], dtype=np.uint8, mode="r")
    ids = data.windows(range(n))
    starts = torch.from_numpy(np.stack([counts[k * L : k * L + L + 1] >= 1 for k in range(n)]))
    return ids, starts


@pytest.mark.parametrize("objective", ["masked", "mntp"])
@pytest.mark.parametrize("masking", ["whole-word", "ngram"])
def test_whole_words_are_masked_whole(data_dir, objective, masking):
    ids, starts = _windows_and_starts(data_dir)
    cfg = TrainConfig(objective=objective, masking=masking, max_span=3, mask_ratio="fixed", mask_ratio_end=0.3)
    obj = build_objective(cfg, 320, data_dir)
    b = obj.corrupt(ids, torch.Generator().manual_seed(0), train=True)
    # the masked token of position i: i itself (masked) or i + 1 (mntp reads the next token's mask)
    shift = 1 if objective == "mntp" else 0
    window = ids[:, : ids.shape[1] - 1 + shift][:, shift:]
    begins = starts[:, shift : ids.shape[1] - 1 + shift]
    words = torch.cumsum(begins.long(), 1)
    # a word's characters: a token that is only the space before a word (a bare "Ġ") holds none of them
    blank = torch.tensor([load_tokenizer(data_dir).id_to_token(i) == "Ġ" for i in range(320)])
    can = maskable(window) & ~blank[window]
    checked = 0
    for row in range(len(ids)):
        for w in words[row].unique():
            inside = (words[row] == w) & can[row]
            if inside.sum() > 1:
                values = b.token_mask[row][inside]
                assert values.all() or not values.any(), (row, int(w), values.tolist())
                checked += int(values.all())
    assert checked > 10  # multi-token words were masked, whole
    masked_words = sum(len(set(words[r][b.token_mask[r]].tolist())) for r in range(len(ids)))
    all_words = sum(len(set(words[r][can[r]].tolist())) for r in range(len(ids)))
    assert 0.2 < masked_words / all_words < 0.4  # the ratio counts words


@pytest.mark.parametrize("ratio,mean", [("uniform:0.1,0.5", 0.3), ("beta:2,6", 0.25)])
def test_a_drawn_ratio_has_the_mean_it_promises(ratio, mean):
    obj = build_objective(TrainConfig(objective="masked", max_span=1, mask_ratio=ratio), 300)
    ids = torch.randint(5, 300, (10_000, 129), generator=torch.Generator().manual_seed(0))
    b = obj.corrupt(ids, torch.Generator().manual_seed(1), fraction_done=0.5)
    per_row = b.token_mask.float().mean(1)
    assert abs(per_row.mean().item() - mean) < 0.005
    assert per_row.std().item() > 0.05  # drawn per sequence, not one ratio for all
    # loss weights: the mean CE over the masked tokens of the batch, whatever each row's ratio
    assert b.loss_weights.sum().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(b.loss_weights[b.token_mask], b.loss_weights[b.token_mask][0])
    # validation masks the end ratio, as before
    val = obj.corrupt(ids[:2000], torch.Generator().manual_seed(1), train=False)
    assert abs(val.token_mask.float().mean().item() - 0.15) < 0.005


def test_fixed_ratio_ignores_the_schedule():
    obj = build_objective(TrainConfig(objective="masked", max_span=1, mask_ratio="fixed", mask_ratio_end=0.2), 300)
    ids = torch.randint(5, 300, (2000, 129), generator=torch.Generator().manual_seed(0))
    for done in (0.0, 1.0):
        b = obj.corrupt(ids, torch.Generator().manual_seed(1), fraction_done=done)
        assert abs(b.token_mask.float().mean().item() - 0.2) < 0.005


def test_masking_options_train_from_flags_and_are_checked(cli, data_dir, tmp_path):
    tiny = tiny_flags(max_steps=3, eval_interval=0)
    cli("train", "--data", data_dir, "--out", tmp_path / "h", "--objective", "hybrid", *tiny, "--masking", "whole-word",
        "--mask-ratio", "uniform:0.1,0.4")  # fmt: skip
    bad = ("train", "--data", data_dir, "--out", tmp_path / "x", "--objective", "masked", *tiny)
    assert_one_line_error(cli(*bad, "--mask-ratio", "uniform:0.5,0.1", check=False), "mask_ratio")
    assert_one_line_error(cli(*bad, "--masking", "words", check=False), "masking must be one of")

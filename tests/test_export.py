import pytest
import torch
from helpers import assert_one_line_error

from hybridlm.evaluate.lm import HFLM, RunLM
from hybridlm.evaluate.scoring import score_sentences
from hybridlm.runs import load_run

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("objective", ["masked", "diffusion", "hybrid"])
def test_bidirectional_export_loads_as_masked_lm(cli, runs, tmp_path, objective):
    out = tmp_path / objective
    cli("export", "--run", runs[objective], "--out", out)
    path = out / "masked_lm" if objective == "hybrid" else out
    hf = transformers.AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=True, dtype=torch.float32).eval()
    ours = load_run(runs[objective]).model
    ids = torch.randint(5, 320, (2, 20))
    with torch.no_grad():
        want = ours(ids, False, logits=True)
        got = hf(ids).logits
    # as the run computes them: for the hybrid's MNTP view, position i predicts token i+1 (GPT-BERT's
    # layout, which the official pipeline's mntp backend reads at i-1)
    assert torch.allclose(got, want, atol=1e-4)
    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=True)
    assert config.mntp is (objective == "hybrid") and not hasattr(config, "mntp_shift")
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert tok.mask_token_id == 3
    # the exported model scores like the run, read as what it is: PLL for masked, MNTP for hybrid
    sentences = ["the cat sleeps .", "a boy sees himself ."]
    if objective != "diffusion":
        scorer = "pll" if objective == "masked" else "mntp"
        exported = HFLM(path, trust_remote_code=True)
        assert exported.scorers[0] == scorer
        assert score_sentences(exported, sentences) == pytest.approx(
            score_sentences(RunLM(runs[objective]), sentences, scorer), abs=1e-4
        )


def test_model_code_runs_only_when_asked(cli, runs, tmp_path):
    # a model folder whose configuration module writes a file when imported
    out = tmp_path / "m"
    cli("export", "--run", runs["masked"], "--out", out)
    marker = tmp_path / "pwned"
    (out / "configuration_hybridlm.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n" + (out / "configuration_hybridlm.py").read_text()
    )
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"sentence_good": "the cat sleeps .", "sentence_bad": "the cat sleep ."}\n')
    proc = cli("eval", "blimp", "--hf-model", out, "--data", pairs, check=False)
    assert_one_line_error(proc, "--trust-remote-code")
    assert not marker.exists()
    cli("eval", "blimp", "--hf-model", out, "--data", pairs, "--trust-remote-code")
    assert marker.exists()  # the user asked: now it runs


def test_export_refuses_to_overwrite(cli, runs, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    assert_one_line_error(cli("export", "--run", runs["causal"], "--out", tmp_path / "x", check=False), "not empty")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"

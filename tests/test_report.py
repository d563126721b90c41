import json

from hybridlm.grammar import write_minimal_pairs


def test_report_with_curves_blimp_perplexity_and_samples(cli, tmp_path, runs, corpus):
    pairs = write_minimal_pairs(tmp_path / "pairs", n_per_paradigm=3)
    text = tmp_path / "valid.txt"
    text.write_text(corpus.read_text()[:800])
    for obj in ("causal", "diffusion"):
        cli("eval", "blimp", "--run", runs[obj], "--data", pairs)
        cli("eval", "perplexity", "--run", runs[obj], "--input", text, "--samples", 2)
    blimp = json.loads((runs["diffusion"] / "eval" / "blimp-elbo.json").read_text())
    assert blimp["n_pairs"] == 18 and blimp["scorer"] == "elbo"
    cli("report", runs["causal"], runs["diffusion"], runs["masked"], "--out", tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    for png in ("loss.png", "blimp_fields.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in md
    assert "| causal | causal |" in md and "elbo (upper bound (NELBO))" in md and "Samples:" in md
    # a hybrid scored both ways keeps both results, and the report shows both
    for scorer in ("causal", "mntp"):
        cli("eval", "blimp", "--run", runs["hybrid"], "--data", pairs, "--scorer", scorer)
    cli("report", runs["hybrid"], "--out", tmp_path / "h", "--format", "html", "--no-samples")
    page = (tmp_path / "h" / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "<td>hybrid</td><td>causal</td>" in page and "<td>hybrid</td><td>mntp</td>" in page

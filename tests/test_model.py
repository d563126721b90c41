import pytest
import torch

from hybridlm.errors import UserError
from hybridlm.model import AttentionSpec, KVCache, build_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("tiny", 300).eval()


def test_causal_mode_never_sees_the_future(model):
    ids = torch.randint(5, 300, (2, 24))
    changed = ids.clone()
    changed[:, 15:] = torch.randint(5, 300, (2, 9))
    with torch.no_grad():
        a, b = model(ids, True, logits=True), model(changed, True, logits=True)
    assert torch.allclose(a[:, :15], b[:, :15], atol=1e-6)
    assert not torch.allclose(a[:, 15:], b[:, 15:], atol=1e-3)


def test_bidirectional_mode_sees_the_future(model):
    ids = torch.randint(5, 300, (1, 16))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1 - 5) % 295 + 5
    with torch.no_grad():
        a, b = model(ids, False, logits=True), model(changed, False, logits=True)
    assert not torch.allclose(a[:, 0], b[:, 0], atol=1e-5)


def test_per_row_modes_equal_separate_passes(model):
    ids = torch.randint(5, 300, (3, 12))
    mode = torch.tensor([True, False, True])
    with torch.no_grad():
        mixed = model(ids, AttentionSpec(mode), logits=True)
        causal = model(ids, True, logits=True)
        bidi = model(ids, False, logits=True)
    assert torch.allclose(mixed[0], causal[0], atol=1e-5) and torch.allclose(mixed[2], causal[2], atol=1e-5)
    assert torch.allclose(mixed[1], bidi[1], atol=1e-5)


def test_document_mask_isolates_packed_documents(model):
    doc_a, doc_b = torch.randint(5, 300, (1, 7)), torch.randint(5, 300, (1, 8))
    packed = torch.cat([torch.tensor([[1]]), doc_a, torch.tensor([[1]]), doc_b], 1)
    other_b = torch.cat([torch.tensor([[1]]), doc_a, torch.tensor([[1]]), torch.randint(5, 300, (1, 8))], 1)
    doc_ids = torch.cumsum((packed == 1).int(), -1)
    with torch.no_grad():
        a = model(packed, AttentionSpec(False, doc_ids), logits=True)
        b = model(other_b, AttentionSpec(False, doc_ids), logits=True)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)  # document A never saw document B


def test_kv_cache_matches_full_forward(model):
    ids = torch.randint(5, 300, (2, 10))
    with torch.no_grad():
        full = model(ids, True, logits=True)
        caches = [KVCache() for _ in model.blocks]
        steps = [model(ids[:, :4], True, kv_caches=caches, logits=True)]
        for i in range(4, 10):
            steps.append(model(ids[:, i : i + 1], kv_caches=caches, start_pos=i, logits=True))
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_forward_returns_hidden_states_and_logits_when_asked(model):
    ids = torch.randint(5, 300, (2, 6))
    with torch.no_grad():
        hidden, logits = model(ids, False), model(ids, False, logits=True)
    assert hidden.shape == (2, 6, model.cfg.d_model) and logits.shape == (2, 6, 300)
    assert torch.allclose(model.head(hidden), logits) and torch.allclose(
        model.head(hidden, fp32=True), logits, atol=1e-6
    )


def test_preset_sizes():
    tiny = build_model("tiny", 512).num_parameters()
    small = build_model("small", 16384).num_parameters()
    assert tiny < 250_000
    assert 10e6 <= small <= 35e6
    with pytest.raises(UserError, match="unknown preset"):
        build_model("huge", 100)


def _shared_prefix_segments(B: int, T: int):
    """A prefix of 10 tokens, then branches of 7 tokens each (the rest of the row)."""
    pos = torch.arange(T)
    segments = torch.where(pos < 10, 0, (pos - 10) // 7 + 1).expand(B, T)
    positions = torch.where(pos < 10, pos, 10 + (pos - 10) % 7).expand(B, T)
    return segments, positions


@pytest.mark.parametrize(
    "case", ["documents", "mixed_rows", "prefix", "everything", "blocks", "two_streams", "shared_prefix"]
)
def test_flex_and_matmul_attention_equal_sdpa(case):
    """The FlexAttention block mask encodes the dense mask's rule, and two matmuls compute what SDPA does: same
    hidden states on the CPU (PyTorch's FlexAttention runs forward there; CUDA, where it trains, is checked by
    bench/gpu_check.py)."""
    import warnings

    torch.manual_seed(0)
    model = build_model("tiny", vocab_size=300).eval()
    B, T = 4, 48
    ids = torch.randint(5, 300, (B, T), generator=torch.Generator().manual_seed(1))
    docs = torch.cumsum((torch.rand(B, T, generator=torch.Generator().manual_seed(2)) < 0.08).int(), -1)
    segments, positions = _shared_prefix_segments(B, T)
    spec = {
        "documents": AttentionSpec(True, docs),
        "mixed_rows": AttentionSpec(torch.tensor([True, False, True, False])),
        "prefix": AttentionSpec(True, prefix_lengths=torch.tensor([0, 5, 17, 47])),
        "everything": AttentionSpec(torch.tensor([True, False, True, True]), docs, torch.tensor([3, 0, 0, 20])),
        "blocks": AttentionSpec(False, docs, block_ids=torch.arange(T) // 5),
        # block diffusion's x_t ⊕ x_0 (two halves sharing positions), documents per half
        "two_streams": AttentionSpec(
            False,
            torch.cat([docs[:, : T // 2]] * 2, 1),
            block_ids=torch.cat([torch.arange(T // 2) // 4] * 2),
            noisy=torch.arange(T) < T // 2,
            position_ids=torch.cat([torch.arange(T // 2)] * 2),
        ),
        "shared_prefix": AttentionSpec(True, segment_ids=segments, position_ids=positions),
    }[case]
    with torch.no_grad():
        dense = model(ids, spec)
        model.attention_backend = "flex"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eager FlexAttention's "compile me for speed"
            flex = model(ids, spec)
    assert torch.allclose(flex, dense, atol=2e-5), (flex - dense).abs().max()
    model.attention_backend = "matmul"
    with torch.no_grad():
        matmul, matmul_causal = model(ids, spec), model(ids, True)
    assert torch.allclose(matmul, dense, atol=2e-5), (matmul - dense).abs().max()
    # and the mask matters: plain causal attention differs (the same on both backends without a mask)
    model.attention_backend = "sdpa"
    with torch.no_grad():
        causal = model(ids, True)
    assert (causal - dense).abs().max() > 1e-3
    assert torch.allclose(matmul_causal, causal, atol=2e-5)


def test_a_shared_prefix_packed_with_its_branches_equals_each_copy_alone(model):
    """segment_ids: one row holding a prefix and three continuations gives each continuation's states as
    the prefix + continuation alone (what scoring the options of an item once per prefix relies on)."""
    gen = torch.Generator().manual_seed(4)
    prefix, branches = torch.randint(5, 300, (10,), generator=gen), torch.randint(5, 300, (3, 7), generator=gen)
    segments, positions = _shared_prefix_segments(1, 10 + 3 * 7)
    packed_ids = torch.cat([prefix, branches.flatten()])[None]
    with torch.no_grad():
        packed = model(packed_ids, AttentionSpec(True, segment_ids=segments, position_ids=positions))[0]
        for k in range(3):
            alone = model(torch.cat([prefix, branches[k]])[None], True)[0]
            assert torch.allclose(packed[:10], alone[:10], atol=1e-5)
            assert torch.allclose(packed[10 + 7 * k : 17 + 7 * k], alone[10:], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_the_trunk_compiles_as_one_graph(backend):
    """What `--compile` compiles (the embedding, every block and the final norm, `Transformer.trunk`) is
    one graph whichever attention it is given; the masks themselves are built outside, once per forward.
    (Dynamo's tracing only: no codegen.)"""
    torch.manual_seed(0)
    model = build_model("tiny", 300, {"mtp_heads": 2})
    if backend == "flex":
        model.requires_grad_(False)  # PyTorch's FlexAttention has no backward on the CPU
    B, T = 4, 64
    ids, cos, sin = torch.randint(5, 300, (B, T)), model.rope_cos[:T], model.rope_sin[:T]
    docs = torch.cumsum((torch.rand(B, T) < 0.05).int(), -1)
    segments, _ = _shared_prefix_segments(B, T)
    for spec in (
        AttentionSpec(True),
        AttentionSpec(False),
        AttentionSpec(torch.tensor([True, False, True, True]), docs, torch.tensor([0, 0, 5, 0])),
        AttentionSpec(False, docs, block_ids=torch.arange(T) // 8),
        AttentionSpec(True, segment_ids=segments),
    ):
        mask, flag = spec.mask(T, "cpu", backend=backend)
        for mtp in (False, True):
            explained = torch._dynamo.explain(model.trunk)(ids, cos, sin, mask, flag, None, mtp)
            assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons

"""import_gguf.py: Q4_1 / Q8_0 decoding against gguf's own dequantization, the q/k row unpermutation against
llama.cpp's permutation, whole-file import of synthetic GGUFs written here, and the error paths. Tests that read
the SmolLM2 file are marked slow.

Finding (asserted below): QMatrix.dequantize() of a decoded tensor equals gguf.quants.dequantize() exactly in
float32, bit for bit for Q4_1 (the same float32 operations d * q + m), and equal in value for Q8_0 (q * d + 0.0
turns gguf's -0.0 into +0.0 where q == 0 and d < 0, the only bit difference).
"""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from roma.host.errors import RomaError  # noqa: E402
from roma.host.import_gguf import decode_q4_1, decode_q8_0, load_gguf, unpermute_rope_rows  # noqa: E402
from roma.host.model import GROUP  # noqa: E402

Q4_1 = gguf.GGMLQuantizationType.Q4_1
Q8_0 = gguf.GGMLQuantizationType.Q8_0


def f16_bytes(x):
    return np.frombuffer(np.float16(x).tobytes(), np.uint8)


def random_f16(rng, n, lo=-12, hi=4):
    """Finite float16 values of both signs over a wide range, with zeros and subnormals mixed in."""
    v = rng.choice([-1, 1], n) * np.exp2(rng.uniform(lo, hi, n))
    v[::17] = 0.0
    v[5::23] = 3e-7                         # float16 subnormal
    return v.astype(np.float16)


def q4_1_raw(rng, rows, cols):
    groups = cols // GROUP
    d = random_f16(rng, rows * groups).view(np.uint8).reshape(rows, groups, 2)
    m = random_f16(rng, rows * groups).view(np.uint8).reshape(rows, groups, 2)
    qs = rng.integers(0, 256, (rows, groups, 16), dtype=np.uint8)
    return np.concatenate([d, m, qs], axis=2).reshape(rows, groups * 20)


def q8_0_raw(rng, rows, cols):
    groups = cols // GROUP
    d = random_f16(rng, rows * groups).view(np.uint8).reshape(rows, groups, 2)
    qs = rng.integers(0, 256, (rows, groups, 32), dtype=np.uint8)
    return np.concatenate([d, qs], axis=2).reshape(rows, groups * 34)


# ---------------------------------------------------------------------------------------------------------
# block decoding, synthetic (no file needed)

def test_q4_1_block_layout_by_hand():
    # one block: d = 0.5, m = -2.0; byte j holds element j (low nibble) and element j + 16 (high nibble)
    nib = np.array([(j & 0xF) | ((15 - j) << 4) for j in range(16)], np.uint8)
    raw = np.concatenate([f16_bytes(0.5), f16_bytes(-2.0), nib])[None, :]
    q = decode_q4_1(raw, 1, 32)
    assert q.bits == 4 and not q.signed and q.codes.dtype == np.uint8
    assert q.codes[0].tolist() == list(range(16)) + [15 - j for j in range(16)]
    assert q.d.tolist() == [[0.5]] and q.m.tolist() == [[-2.0]]
    want = 0.5 * np.array(q.codes[0], np.float32) - 2.0
    assert np.array_equal(q.dequantize()[0], want)
    assert np.array_equal(q.dequantize(), gguf.quants.dequantize(raw, Q4_1))


def test_q8_0_block_layout_by_hand():
    vals = np.array([-128, 127, 0, 1, -1] + list(range(27)), np.int8)
    raw = np.concatenate([f16_bytes(0.25), vals.view(np.uint8)])[None, :]
    q = decode_q8_0(raw, 1, 32)
    assert q.bits == 8 and q.signed and q.codes.dtype == np.int8
    assert q.codes[0].tolist() == vals.tolist()
    assert q.d.tolist() == [[0.25]] and np.all(q.m == 0)
    assert np.array_equal(q.dequantize()[0], vals.astype(np.float32) * 0.25)
    assert np.array_equal(q.dequantize(), gguf.quants.dequantize(raw, Q8_0))


def test_q4_1_random_blocks_equal_gguf_bit_for_bit():
    rng = np.random.default_rng(0)
    rows, cols = 37, 8 * GROUP
    raw = q4_1_raw(rng, rows, cols)
    q = decode_q4_1(raw, rows, cols)
    assert q.codes.shape == (rows, cols) and q.d.shape == (rows, cols // GROUP) and q.d.dtype == np.float32
    ref = gguf.quants.dequantize(raw, Q4_1)
    got = q.dequantize()
    assert got.dtype == np.float32 and ref.dtype == np.float32 and ref.shape == (rows, cols)
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))          # bit for bit


def test_q8_0_random_blocks_equal_gguf():
    rng = np.random.default_rng(1)
    rows, cols = 29, 6 * GROUP
    raw = q8_0_raw(rng, rows, cols)
    q = decode_q8_0(raw, rows, cols)
    ref = gguf.quants.dequantize(raw, Q8_0)
    got = q.dequantize()
    assert got.dtype == np.float32 and np.array_equal(got, ref)
    # the only bit difference: -0.0 (gguf, q = 0 times d < 0) vs +0.0 (ours: + m = 0.0)
    diff = got.view(np.uint32) != ref.view(np.uint32)
    assert np.all(ref[diff] == 0) and np.all(got[diff] == 0)


# ---------------------------------------------------------------------------------------------------------
# q/k row permutation

def llama_cpp_permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute (n_head already the kv head count for k)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("n_head,head_dim", [(1, 8), (2, 32), (3, 64), (9, 64), (4, 2)])
def test_unpermute_inverts_llama_cpp_permute(n_head, head_dim):
    rng = np.random.default_rng(n_head)
    rows, cols = n_head * head_dim, 96
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    p = llama_cpp_permute(w, n_head)
    assert np.array_equal(unpermute_rope_rows(p, n_head), w)
    assert np.array_equal(llama_cpp_permute(unpermute_rope_rows(w, n_head), n_head), w)
    if head_dim > 2:
        assert not np.array_equal(p, w)
    # any row-major array with those rows: codes, per-group scales, a vector
    for a in (rng.integers(0, 16, (rows, cols)).astype(np.uint8), rng.standard_normal((rows, 3)),
              np.arange(rows)):
        assert np.array_equal(unpermute_rope_rows(llama_cpp_permute(a, n_head), n_head), a)
    # within a head, llama.cpp interleaves the halves: rows (0, half, 1, half + 1, ...)
    idx = llama_cpp_permute(np.arange(rows), n_head)[:head_dim]
    half = head_dim // 2
    assert idx[:4].tolist() == [0, half, 1, half + 1][:min(4, head_dim)]


# ---------------------------------------------------------------------------------------------------------
# whole synthetic files

CFG = dict(dim=64, n_layers=2, n_heads=2, n_kv_heads=1, hidden=96, vocab=40, context=128)


def hf_weights(rng, cfg=CFG):
    """HF-layout float weights of a small LLaMA."""
    d, hd = cfg["dim"], cfg["dim"] // cfg["n_heads"]
    kv = cfg["n_kv_heads"] * hd
    layers = []
    for _ in range(cfg["n_layers"]):
        layers.append(dict(
            q=rng.standard_normal((d, d)), k=rng.standard_normal((kv, d)), v=rng.standard_normal((kv, d)),
            o=rng.standard_normal((d, d)), gate=rng.standard_normal((cfg["hidden"], d)),
            up=rng.standard_normal((cfg["hidden"], d)), down=rng.standard_normal((d, cfg["hidden"])),
            attn_norm=rng.uniform(0.5, 1.5, d), ffn_norm=rng.uniform(0.5, 1.5, d)))
    return dict(layers=layers, embed=rng.standard_normal((cfg["vocab"], d)), norm=rng.uniform(0.5, 1.5, d))


def write_gguf(path, w, cfg=CFG, arch="llama", skip=(), proj_type=Q4_1, head=False, keys=True):
    """Write a GGUF the way llama.cpp's converter lays it out (q/k rows permuted, Q4_1 linears, Q8_0 embed)."""
    wr = gguf.GGUFWriter(str(path), arch)
    if keys:
        wr.add_block_count(cfg["n_layers"])
        wr.add_context_length(cfg["context"])
        wr.add_embedding_length(cfg["dim"])
        wr.add_feed_forward_length(cfg["hidden"])
        wr.add_head_count(cfg["n_heads"])
        wr.add_head_count_kv(cfg["n_kv_heads"])
        wr.add_rope_freq_base(10000.0)
        wr.add_layer_norm_rms_eps(1e-5)
        wr.add_bos_token_id(1)
        wr.add_eos_token_id(2)

    def put(name, a, qtype):
        if name in skip:
            return
        a = np.ascontiguousarray(a, dtype=np.float32)
        if qtype == gguf.GGMLQuantizationType.F32:
            wr.add_tensor(name, a)
        elif qtype == gguf.GGMLQuantizationType.F16:
            wr.add_tensor(name, a.astype(np.float16))
        else:
            wr.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    F32 = gguf.GGMLQuantizationType.F32
    put("token_embd.weight", w["embed"], Q8_0)
    for i, L in enumerate(w["layers"]):
        put(f"blk.{i}.attn_norm.weight", L["attn_norm"], F32)
        put(f"blk.{i}.ffn_norm.weight", L["ffn_norm"], F32)
        put(f"blk.{i}.attn_q.weight", llama_cpp_permute(L["q"], cfg["n_heads"]), proj_type)
        put(f"blk.{i}.attn_k.weight", llama_cpp_permute(L["k"], cfg["n_kv_heads"]), proj_type)
        for g, h in (("attn_v", "v"), ("attn_output", "o"), ("ffn_gate", "gate"), ("ffn_up", "up"),
                     ("ffn_down", "down")):
            put(f"blk.{i}.{g}.weight", L[h], proj_type)
    put("output_norm.weight", w["norm"], F32)
    if head:
        put("output.weight", w["embed"][::-1], Q4_1)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    rng = np.random.default_rng(7)
    w = hf_weights(rng)
    path = write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", w)
    return w, path


def test_synthetic_file_imports_losslessly(synthetic):
    w, path = synthetic
    m = load_gguf(path, name="syn", with_tokenizer=False)
    c = m.config
    assert (c.name, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden, c.vocab, c.context) == \
        ("syn", 64, 2, 2, 1, 96, 40, 128)
    assert (c.head_dim, c.rope_theta, c.norm_eps, c.bos_id, c.eos_ids, c.chat) == (32, 10000.0, 1e-5, 1, (2,), False)
    assert m.lm_head is None and m.tokenizer is None
    reader = gguf.GGUFReader(str(path))
    t = {x.name: x for x in reader.tensors}
    for i, L in enumerate(w["layers"]):
        for gname, pname, n_head in (("attn_q", "q_proj", 2), ("attn_k", "k_proj", 1), ("attn_v", "v_proj", 0),
                                     ("attn_output", "o_proj", 0), ("ffn_gate", "gate_proj", 0),
                                     ("ffn_up", "up_proj", 0), ("ffn_down", "down_proj", 0)):
            q = m.layers[i].proj[pname]
            ref = gguf.quants.dequantize(t[f"blk.{i}.{gname}.weight"].data, Q4_1)
            if n_head:
                ref = unpermute_rope_rows(ref, n_head)
            assert q.bits == 4 and np.array_equal(q.dequantize(), ref), (i, pname)
        # q and k are back in HF's row order: close to the original float weights (Q4_1 error <= d / 2 + fp16)
        for pname, key in (("q_proj", "q"), ("k_proj", "k")):
            q = m.layers[i].proj[pname]
            err = np.abs(q.dequantize() - L[key]).reshape(q.shape[0], -1, GROUP)
            assert np.all(err <= q.d[:, :, None] * 0.51 + 0.01 * np.abs(q.m[:, :, None]))
        assert np.array_equal(m.layers[i].attn_norm, L["attn_norm"].astype(np.float32))
        assert np.array_equal(m.layers[i].ffn_norm, L["ffn_norm"].astype(np.float32))
    assert m.embed.signed and m.embed.bits == 8
    assert np.array_equal(m.embed.dequantize(), gguf.quants.dequantize(t["token_embd.weight"].data, Q8_0))
    assert np.array_equal(m.final_norm, w["norm"].astype(np.float32))


def test_decoded_model_is_cached_by_the_files_hash(synthetic, tmp_path, monkeypatch):
    """A second load reads the cached arrays (no GGUF parsing): the same model, content hash included; a name
    is the caller's; a damaged cache file is decoded again."""
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path))
    _, path = synthetic
    first = load_gguf(path, name="syn", with_tokenizer=False)
    [cached] = (tmp_path / "gguf").glob("*.npz")
    import roma.host.import_gguf as ig
    monkeypatch.setattr(ig, "_decode", lambda p: pytest.fail("decoded again"))
    again = load_gguf(path, name="other", with_tokenizer=False)
    assert again.content_hash() != first.content_hash() and again.config.name == "other"    # (the name is hashed)
    assert load_gguf(path, name="syn", with_tokenizer=False).content_hash() == first.content_hash()
    assert again.embed.signed and again.embed.bits == 8 and again.layers[1].proj["q_proj"].bits == 4
    for damage in (b"not a zip", cached.read_bytes()[:1000]):          # garbage, and a truncated zip
        cached.write_bytes(damage)
        monkeypatch.undo()
        monkeypatch.setenv("ROMA_CACHE", str(tmp_path))
        assert load_gguf(path, name="syn", with_tokenizer=False).content_hash() == first.content_hash()
    assert [p.name for p in (tmp_path / "gguf").iterdir()] == [cached.name]    # no temporary files left


def test_synthetic_file_with_untied_head(tmp_path):
    w = hf_weights(np.random.default_rng(8))
    m = load_gguf(write_gguf(tmp_path / "head.gguf", w, head=True), with_tokenizer=False)
    assert m.lm_head is not None and m.lm_head.shape == (40, 64)
    assert np.abs(m.lm_head.dequantize() - w["embed"][::-1]).max() < 0.6


def test_golden_model_runs_on_an_imported_file(synthetic):
    from roma.host.golden.model import GoldenModel
    m = load_gguf(synthetic[1], with_tokenizer=False)
    g = GoldenModel(m)
    logits = g.step([1, 5, 7], g.new_state())
    assert logits.shape == (40,) and len(np.unique(logits)) > 10


# ---------------------------------------------------------------------------------------------------------
# error paths

def test_missing_file(tmp_path):
    with pytest.raises(RomaError, match="not found") as e:
        load_gguf(tmp_path / "nope.gguf")
    assert "nope.gguf" in str(e.value)


def test_garbage_file(tmp_path):
    p = tmp_path / "garbage.gguf"
    p.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(RomaError, match="not a readable GGUF file") as e:
        load_gguf(p)
    assert "garbage.gguf" in str(e.value) and "magic" in str(e.value)
    p.write_bytes(b"")
    with pytest.raises(RomaError, match="not a readable GGUF file"):
        load_gguf(p)


def test_truncated_synthetic_file(synthetic, tmp_path):
    data = synthetic[1].read_bytes()
    for cut in (4, 20, 200, len(data) // 3, len(data) // 2, len(data) - 100):
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(data[:cut])
        with pytest.raises(RomaError, match="not a readable GGUF file"):
            load_gguf(p, with_tokenizer=False)


def test_non_llama_architecture(tmp_path):
    p = tmp_path / "gpt2.gguf"
    wr = gguf.GGUFWriter(str(p), "gpt2")
    wr.add_block_count(1)
    wr.add_context_length(64)
    wr.add_embedding_length(64)
    wr.add_tensor("token_embd.weight", np.zeros((8, 64), np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    with pytest.raises(RomaError, match="architecture 'gpt2' is not supported") as e:
        load_gguf(p, with_tokenizer=False)
    assert "LLaMA" in str(e.value)


def test_missing_key_tensor_and_unsupported_type(tmp_path):
    w = hf_weights(np.random.default_rng(9))
    with pytest.raises(RomaError, match="lacks the key 'llama.block_count'"):
        load_gguf(write_gguf(tmp_path / "nokeys.gguf", w, keys=False), with_tokenizer=False)
    with pytest.raises(RomaError, match="blk.1.ffn_up.weight is missing"):
        load_gguf(write_gguf(tmp_path / "notensor.gguf", w, skip=("blk.1.ffn_up.weight",)), with_tokenizer=False)
    with pytest.raises(RomaError, match="output_norm.weight is missing"):
        load_gguf(write_gguf(tmp_path / "nonorm.gguf", w, skip=("output_norm.weight",)), with_tokenizer=False)
    with pytest.raises(RomaError, match="is F16; supported: Q4_1"):
        load_gguf(write_gguf(tmp_path / "f16.gguf", w, proj_type=gguf.GGMLQuantizationType.F16),
                  with_tokenizer=False)


# ---------------------------------------------------------------------------------------------------------
# the real SmolLM2 file (slow: parsing its metadata alone takes ~4 s)

@pytest.fixture(scope="module")
def smollm2():
    from roma.host.models import smollm2_path
    try:
        return smollm2_path()
    except RomaError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_smollm2_tensors_decode_like_gguf(smollm2):
    reader = gguf.GGUFReader(str(smollm2))
    t = {x.name: x for x in reader.tensors}
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight", "blk.29.ffn_gate.weight"):
        x = t[name]
        assert x.tensor_type == Q4_1
        cols, rows = (int(v) for v in x.shape)
        q = decode_q4_1(x.data, rows, cols)
        ref = gguf.quants.dequantize(x.data, Q4_1)
        assert ref.shape == (rows, cols)
        assert np.array_equal(q.dequantize().view(np.uint32), ref.view(np.uint32)), name   # bit for bit
    x = t["token_embd.weight"]
    assert x.tensor_type == Q8_0
    dim, vocab = (int(v) for v in x.shape)
    q = decode_q8_0(x.data, vocab, dim)
    ref = gguf.quants.dequantize(x.data, Q8_0)
    got = q.dequantize()
    assert np.array_equal(got, ref)                                    # equal values (+0.0 vs -0.0 aside)
    diff = got.view(np.uint32) != ref.view(np.uint32)
    assert np.all(ref[diff] == 0)


@pytest.mark.slow
def test_smollm2_truncated_copy(smollm2, tmp_path):
    p = tmp_path / "truncated.gguf"
    with open(smollm2, "rb") as f:
        p.write_bytes(f.read(1 << 20))
    with pytest.raises(RomaError, match="not a readable GGUF file") as e:
        load_gguf(p)
    assert "truncated.gguf" in str(e.value)


@pytest.mark.slow
@pytest.mark.float
def test_smollm2_qk_equal_transformers_gguf_loader(smollm2):
    """transformers' own GGUF loader (dequantize + reverse permute) gives exactly our q/k (and the rest)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(str(smollm2.parent), gguf_file=smollm2.name)
    sd = hf.state_dict()
    m = load_gguf(smollm2, with_tokenizer=False)
    c = m.config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden, c.vocab) == (576, 30, 9, 3, 1536, 49152)
    for i in (0, 29):
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            ref = sd[f"model.layers.{i}.self_attn.{p}.weight"].numpy()
            assert ref.dtype == np.float32
            assert np.array_equal(m.layers[i].proj[p].dequantize(), ref), (i, p)
    assert np.array_equal(m.layers[0].proj["down_proj"].dequantize(), sd["model.layers.0.mlp.down_proj.weight"].numpy())
    assert np.array_equal(m.embed.dequantize(), sd["model.embed_tokens.weight"].numpy())
    assert np.array_equal(m.layers[3].attn_norm, sd["model.layers.3.input_layernorm.weight"].numpy())

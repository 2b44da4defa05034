"""ROM export: byte-identical output, and banks that reassemble into exactly the model's codes and scales."""

import hashlib
import json

import numpy as np
import pytest

from peft_files import write_adapter
from roma.host.export import export, matrix_list, pack_codes, unpack_codes
from roma.host.golden.weights import to_device
from roma.host.lora import load_adapter
from roma.host.tiny import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-260k")


def tree(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_byte_identical(model, tmp_path):
    export(model, None, tmp_path / "a", lanes=16)
    export(tiny_model("tiny-260k"), None, tmp_path / "b", lanes=16)
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a.keys() == b.keys() and a == b


def test_manifest_hashes_and_version(model, tmp_path):
    m = export(model, None, tmp_path, lanes=32)
    assert m["format_version"] == 1 and m["geometry"]["lanes"] == 32
    for rel, h in m["files"].items():
        assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == h, rel
    assert json.loads((tmp_path / "manifest.json").read_text())["model_hash"] == m["model_hash"]


@pytest.mark.parametrize("bits", [4, 2])
def test_banks_reassemble(tmp_path, bits):
    model = tiny_model("tiny-260k", bits=bits)
    lanes = 8
    m = export(model, None, tmp_path, lanes=lanes, vectors=False)
    banks = [(tmp_path / f"rom/bank_{b:03d}.bin").read_bytes() for b in range(lanes)]
    scales = [np.frombuffer((tmp_path / f"scales/bank_{b:03d}.bin").read_bytes(), "<i2") for b in range(lanes)]
    exps = [np.frombuffer((tmp_path / f"rowexp/bank_{b:03d}.bin").read_bytes(), "i1") for b in range(lanes)]
    word_bytes = 32 * bits // 8
    for entry, (name, q) in zip(m["matrices"], matrix_list(model)):
        dm = to_device(q)
        assert entry["name"] == name and entry["bits"] == bits
        per = entry["rows_per_bank"]
        g = entry["groups"]
        for b in range(lanes):
            off = entry["word_offset"] * word_bytes
            codes = unpack_codes(banks[b][off:off + per * g * word_bytes], per, entry["cols"], bits)
            assert np.array_equal(codes, dm.codes[b::lanes])
            s = scales[b][2 * entry["word_offset"]:2 * (entry["word_offset"] + per * g)].reshape(per, g, 2)
            assert np.array_equal(s[..., 0], dm.dq[b::lanes]) and np.array_equal(s[..., 1], dm.mq[b::lanes])
            assert np.array_equal(exps[b][entry["row_offset"]:entry["row_offset"] + per], dm.er[b::lanes])


def test_pack_roundtrip_signed():
    rng = np.random.default_rng(3)
    c = rng.integers(-128, 128, (4, 64))
    assert np.array_equal(unpack_codes(pack_codes(c, 8), 4, 64, 8, signed=True), c)
    c4 = rng.integers(0, 16, (3, 32))
    packed = pack_codes(c4, 4)
    assert len(packed) == 48 and packed[0] == (c4[0, 0] | (c4[0, 1] << 4))


def test_golden_vectors_and_adapter(model, tmp_path):
    write_adapter(tmp_path / "ad", model, rank=4, b_scale=0.5)
    lora = load_adapter(tmp_path / "ad", model)
    base = export(model, None, tmp_path / "base", lanes=32)
    with_ad = export(model, lora, tmp_path / "lora", lanes=32)
    vb = json.loads((tmp_path / "base/golden.json").read_text())["vectors"]
    vl = json.loads((tmp_path / "lora/golden.json").read_text())["vectors"]
    assert len(vb) == 2 and all(len(v["layer_checksums"]) == 5 and len(v["greedy"]) == 8 for v in vb)
    assert vb[0]["layer_checksums"] != vl[0]["layer_checksums"]   # the adapter changes the computation
    assert base["model_hash"] == with_ad["model_hash"]            # but not the base model's identity
    assert with_ad["lora"]["rank"] == 4 and with_ad["lora"]["rank_padded"] == 32
    assert any(k.startswith("lora/") for k in with_ad["files"])

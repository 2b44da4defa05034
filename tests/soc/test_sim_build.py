"""The simulator build's memory images (boards/sim_build.py): a $readmemh text file becomes the bytes of the
Verilator array it initializes, values cut to the memory's width as Verilator's $readmemh cuts them, and sim.v
loses exactly the $readmemh calls it converts."""

import json

import numpy as np
import pytest

from roma.boards.sim_build import _elem_bytes, hex_image, loader_source, preload_memories


def reference(lines, width, depth):
    nb = _elem_bytes(width)
    out = bytearray(depth * nb)
    for i, x in enumerate(lines):
        out[i * nb:(i + 1) * nb] = (int(x, 16) & ((1 << width) - 1)).to_bytes(nb, "little")
    return bytes(out) if any(out) else None


@pytest.mark.parametrize("width", [1, 7, 8, 12, 16, 17, 32, 40, 47, 64, 65, 128, 258, 1024])
def test_images_match_a_line_by_line_parse(tmp_path, width):
    rng = np.random.default_rng(width)
    depth = 37
    digits = -(-width // 4)
    values = [int(rng.integers(0, 1 << 62)) ** (1 + width // 62) % (1 << (4 * digits)) for _ in range(depth - 5)]
    for lines in ([f"{v:0{digits}x}" for v in values],          # what LiteX writes: fixed width
                  [f"{v:x}" for v in values],                    # ragged widths
                  [f"1{v:0{digits}x}" for v in values]):         # wider than the memory: cut
        f = tmp_path / "m.init"
        f.write_text("\n".join(lines) + "\n")
        assert hex_image(f, width, depth) == reference(lines, width, depth)


def test_all_zero_and_empty_images_need_no_file(tmp_path):
    f = tmp_path / "z.init"
    f.write_text("0000\n" * 10)
    assert hex_image(f, 16, 10) is None
    f.write_text("")
    assert hex_image(f, 16, 10) is None


def test_preload_rewrites_sim_v_and_the_loader_names_each_array(tmp_path):
    (tmp_path / "sim.v").write_text(
        "reg [127:0] codes[0:3];\ninitial begin\n\t$readmemh(\"sim_codes.init\", codes);\nend\n"
        "reg [7:0] zeros[0:1];\ninitial begin\n\t$readmemh(\"sim_zeros.init\", zeros);\nend\n"
        "reg [31:0] rom[0:1];\ninitial begin\n\t$readmemh(\"sim_rom.init\", rom);\nend\n")
    (tmp_path / "sim_codes.init").write_text("01\n02\n")
    (tmp_path / "sim_zeros.init").write_text("00\n00\n")
    (tmp_path / "sim_rom.init").write_text("0\n0\n")
    mems = preload_memories(tmp_path, keep={"sim_rom.init"})
    v = (tmp_path / "sim.v").read_text()
    # (not public: Verilator would evaluate every read of a public array at both clock edges)
    assert "reg [127:0] codes[0:3];\n" in v and "reg [7:0] zeros[0:1];\n" in v and "public" not in v
    assert v.count("$readmemh") == 1 and '$readmemh("sim_rom.init", rom)' in v
    assert (tmp_path / "sim_codes.bin").read_bytes() == bytes([1] + [0] * 15 + [2] + [0] * 47)
    assert not (tmp_path / "sim_zeros.bin").exists() and not (tmp_path / "sim_codes.init").exists()
    assert json.loads((tmp_path / "meminit.json").read_text()) == mems
    header = "VlUnpacked<VlWide<4>/*127:0*/, 4> codes;\nVlUnpacked<CData/*7:0*/, 2> zeros;\n"
    src = loader_source(mems, header)
    assert 'static_assert(sizeof(m.codes) == 64' in src and 'load(&m.codes, sizeof(m.codes), "sim_codes.bin"' in src
    assert 'load(&m.zeros, sizeof(m.zeros), nullptr' in src

"""ROM swap: the .config's block RAM contents parsed and rewritten (synthetic configs, milliseconds); a small routed
design swapped to new words, checked from its unpacked .bit against a direct build (marked synth + slow)."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from roma.boards import rom_swap as rs
from roma.host.errors import RomaError


def _synthetic_config(placed, other=()):
    """A nextpnr-style textual config whose DP16KDs hold the given columns: placed {bram id: (mode, {column j:
    512 bits})}; `other` ids hold zeros (e.g. the CPU's RAMs)."""
    text = ".device LFE5U-25F\n\n.tile R1C1:PLC2\narc: A B\n\n"
    for bram, (mode, cols) in placed.items():
        flat = np.zeros(rs.INIT_WORDS * 9, np.uint8)
        for j, bits in cols.items():
            flat[rs.MODE_INDEX[mode][j]] = bits
        text += f".bram_init {bram}\n" + rs._format_init(rs._init_words(flat)) + "\n"
    for bram in other:
        text += f".bram_init {bram}\n" + rs._format_init(np.zeros(rs.INIT_WORDS, np.uint16)) + "\n"
    return text + ".tile R2C2:PLC2\nenum: X Y\n"


def _layout(ph):
    """The placeholders {name: bits} as yosys might map them: a 32-bit ROM in 18-bit mode (two DP16KDs, the upper
    one's last columns unused), an 8-bit one in 9-bit mode."""
    c, e = ph["codes"], ph["rowexp"]         # codes (1024, 32), rowexp (2048, 8)
    lo = {b + 18 * k: c[k * 512:(k + 1) * 512, b] for b in range(18) for k in range(2)}
    hi = {b - 18 + 18 * k: c[k * 512:(k + 1) * 512, b] for b in range(18, 32) for k in range(2)}
    ex = {b + 9 * k: e[k * 512:(k + 1) * 512, b] for b in range(8) for k in range(4)}
    return {"3": (4, lo), "4": (4, hi), "7": (3, ex)}


@pytest.fixture
def ph():
    return {"codes": rs.placeholder_bits("codes", 32, 1024), "rowexp": rs.placeholder_bits("rowexp", 8, 2048)}


def _random_words(width, depth, seed):
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(0, 1 << width, depth, dtype=np.uint64)]


def test_words_and_bits():
    words = [0, 1, (1 << 100) - 1, 12345 << 70]
    assert rs.from_bits(rs.to_bits(words, 100, 512))[:4] == words
    assert rs.padded_depth(1) == 512 and rs.padded_depth(512) == 512 and rs.padded_depth(1600) == 2048
    with pytest.raises(RomaError, match="do not fit"):
        rs.to_bits([0] * 513, 8, 512)
    # placeholders: deterministic per (seed, name), different across names and seeds
    a = rs.placeholder_words("codes", 32, 512)
    assert a == rs.placeholder_words("codes", 32, 512) != rs.placeholder_words("scales", 32, 512)
    assert a != rs.placeholder_words("codes", 32, 512, seed=2)


def test_config_roundtrip(ph):
    text = _synthetic_config(_layout(ph), other=["0", "1"])
    brams = rs.read_brams(text)
    assert sorted(brams) == ["0", "1", "3", "4", "7"] and all(len(v) == 2048 for v in brams.values())
    assert rs.write_brams(text, brams) == text                  # the format nextpnr writes, reproduced exactly
    brams["0"][5] = 0x1ff
    assert rs.read_brams(rs.write_brams(text, {"0": brams["0"]}))["0"][5] == 0x1ff


def test_locate_swap_check(ph):
    text = _synthetic_config(_layout(ph), other=["0"])
    rmap = rs.locate(text, ph)
    assert rmap.roms == {"codes": (32, 1024), "rowexp": (8, 2048)}
    assert rmap.places[("codes", 20, 1)] == [("4", 4, 20)] and rmap.places[("rowexp", 7, 3)] == [("7", 3, 34)]
    assert rs.RomMap.from_json(rmap.to_json()) == rmap
    # new words (shorter than the padded depth: zero-padded)
    new = {"codes": _random_words(32, 1000, 1), "rowexp": _random_words(8, 1600, 2)}
    out = rs.swap_config(text, rmap, new)
    assert rs.check_config(out, rmap, new) == []
    assert rs.from_bits(rs.read_roms(out, rmap)["codes"])[:1000] == new["codes"]
    assert rs.strip_brams(out) == rs.strip_brams(text)           # only block RAM contents change
    assert rs.read_brams(out)["0"].tobytes() == rs.read_brams(text)["0"].tobytes()     # and only the ROMs'
    bad = rs.check_config(text, rmap, new)                       # the placeholder build is not the model
    assert len(bad) == 2 and bad[0].startswith("codes: ")
    one = dict(new, rowexp=list(new["rowexp"]))
    one["rowexp"][1234] ^= 0x10
    assert rs.check_config(out, rmap, one) == ["rowexp: 1 of 2048 words differ (first at 1234)"]
    with pytest.raises(RomaError, match="contents for"):
        rs.swap_config(text, rmap, {"codes": new["codes"]})


def test_locate_copies_and_failures(ph):
    layout = _layout(ph)
    layout["9"] = layout["7"]                                   # a ROM duplicated (two read ports): both rewritten
    text = _synthetic_config(layout)
    rmap = rs.locate(text, ph)
    assert rmap.places[("rowexp", 0, 0)] == [("7", 3, 0), ("9", 3, 0)]
    new = {"codes": _random_words(32, 1024, 3), "rowexp": _random_words(8, 2048, 4)}
    out = rs.swap_config(text, rmap, new)
    assert rs.check_config(out, rmap, new) == []
    assert rs.read_brams(out)["7"].tobytes() == rs.read_brams(out)["9"].tobytes()
    # a ROM yosys put in logic is not in any DP16KD: refused with its name
    del layout["7"], layout["9"]
    with pytest.raises(RomaError, match=r"not found in block RAM.*rowexp 32 of 32"):
        rs.locate(_synthetic_config(layout), ph)
    with pytest.raises(RomaError, match="not a multiple of 512"):
        rs.locate(text, {"x": np.ones((100, 8), np.uint8)})
    with pytest.raises(RomaError, match="not unique"):
        rs.locate(text, {"x": np.ones((512, 8), np.uint8)})


def test_swap_is_fast(ph):
    """A 2-lane tiny-260k's B-ROM is about 1.3 Mbit; the swap itself is numpy over 512-bit columns."""
    big = {f"codes{i}": rs.placeholder_bits(f"codes{i}", 32, 1024) for i in range(8)}
    placed, n = {}, 0
    for name, bits in big.items():
        for half in range(2):
            cols = {b + 18 * k: bits[k * 512:(k + 1) * 512, 18 * half + b] for b in range(18 if half == 0 else 14)
                    for k in range(2)}
            placed[str(n)] = (4, cols)
            n += 1
    text = _synthetic_config(placed)
    t0 = time.monotonic()
    rmap = rs.locate(text, big)
    new = {name: _random_words(32, 1024, i) for i, name in enumerate(big)}
    out = rs.swap_config(text, rmap, new)
    assert rs.check_config(out, rmap, new) == []
    assert time.monotonic() - t0 < 5


# The accelerator's hook (milliseconds) -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    from roma.host.models import load_model
    return load_model("tiny-260k", with_tokenizer=False)


def _other_model(tiny, what):
    """tiny-260k with other matrix codes ("matrices") or other norm weights ("norms"): the same geometry."""
    import copy
    m = copy.deepcopy(tiny)
    if what == "matrices":
        q = next(iter(m.layers[0].proj.values()))
        q.codes = np.ascontiguousarray(q.codes[::-1])
        m.embed.codes = np.ascontiguousarray(m.embed.codes[:, ::-1])
    else:
        m.final_norm = m.final_norm * 1.5
    return m


def test_accelerator_placeholder_roms(tiny):
    """build_accelerator(placeholder_seed=...) puts the swap's placeholders, padded to whole columns, in every B-ROM
    (L and D units, codes, scales, row exponents); rom_contents names the model's words for the same Memories."""
    from migen import Memory

    from roma.gateware.accel_build import build_accelerator, rom_contents
    from roma.soc.config import AccelConfig
    cfg = AccelConfig(lanes=2, macs_per_lane=8)
    real = rom_contents(tiny, cfg)
    assert len(real) == 2 * 2 * 3 and real["L1.codes"][0] == 32 and real["D0.rowexp"][0] == cfg.exp_bits

    def roms(acc):      # GEMVUnit's Memories (a set: found by their contents)
        return {tuple(m.init): m for u in "LD" for m in getattr(acc.dut, u)._fragment.specials
                if isinstance(m, Memory)}
    built, ph = roms(build_accelerator(tiny, cfg, 32)), roms(build_accelerator(tiny, cfg, 32, placeholder_seed=1))
    assert len(ph) == len(real)
    for name, (width, words) in real.items():
        m = built[tuple(words)]
        p = ph[tuple(rs.placeholder_words(name, width, rs.padded_depth(len(words)), seed=1))]
        assert m.width == p.width == width and m.depth == len(words)
        assert p.depth == rs.padded_depth(len(words)) and p.depth % 512 == 0 and m.name_override == p.name_override


def test_routed_design_key(tiny):
    """A routed design serves every model of its geometry: its key ignores matrices, embedding and name, not the
    norm weights (the vector unit's gamma memory is not swapped)."""
    from roma.boards.model_swap import routed_hash
    from roma.soc.config import AccelConfig
    cfg = AccelConfig(lanes=2, macs_per_lane=8)
    other = _other_model(tiny, "matrices")
    assert other.content_hash() != tiny.content_hash()
    assert routed_hash(other, cfg) == routed_hash(tiny, cfg) != routed_hash(_other_model(tiny, "norms"), cfg)
    assert routed_hash(tiny, cfg) != routed_hash(tiny, AccelConfig(lanes=4, macs_per_lane=8))


def test_a_word_wider_than_its_rom_is_refused():
    """A model of another shape (say 8-bit embedding codes in a routed design built for 4) must not be swapped
    in silently truncated."""
    rmap = rs.RomMap({"codes": (4, 512)}, {})
    with pytest.raises(RomaError, match="codes: a word outside its 4 bits"):
        rs.swap_config("", rmap, {"codes": [3, 17]})


def test_swap_command_needs_a_routed_design(tmp_path, monkeypatch, capsys):
    import roma.boards.bitstream as bs
    from roma.host.cli import main
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path))
    monkeypatch.setattr(bs, "tool_versions", lambda: {})
    assert main(["swap", "--board", "ulx3s", "--model", "tiny-260k", "--lanes", "2", "--force"]) == 1
    err = capsys.readouterr().err
    assert "no routed design of this geometry (2 lanes x 8 MACs" in err and "roma build" in err


# The routed demo design (a minute) ---------------------------------------------------------------------------

@pytest.mark.synth
@pytest.mark.slow
def test_swap_routed_design():
    """RomDemo built once with placeholders, swapped to new words: the unpacked .bit holds exactly the new words,
    differs from the placeholder .bit only in block RAM contents, and its DP16KDs hold what a direct build of the
    new words (yosys and nextpnr again) puts in them; the swap takes seconds, the build longer."""
    from roma.boards.rom_demo import DEMO_ROMS, build_demo
    from roma.host.cache import cache_dir

    ph = {n: rs.placeholder_bits(n, w, rs.padded_depth(d)) for n, (w, d) in DEMO_ROMS.items()}
    folder = cache_dir("test-romswap", "placeholder")
    t0 = time.monotonic()
    times, config, bit = build_demo(folder, {n: (b.shape[1], rs.from_bits(b)) for n, b in ph.items()})
    build_s = time.monotonic() - t0

    new = {n: _random_words(w, d, 11) for n, (w, d) in DEMO_ROMS.items()}
    t0 = time.monotonic()
    text = config.read_text()
    rmap = rs.locate(text, ph)
    swapped = rs.swap_config(text, rmap, new)
    (folder / "swapped.config").write_text(swapped)
    rs.ecppack(folder / "swapped.config", folder / "swapped.bit")
    swap_s = time.monotonic() - t0

    # the proof, from the bitstream itself
    got = rs.ecpunpack(folder / "swapped.bit", folder / "swapped.unpacked.config")
    was = rs.ecpunpack(bit, folder / "placeholder.unpacked.config")
    assert rs.check_config(got, rmap, new) == []
    assert rs.check_config(was, rmap, new) != []
    assert rs.strip_brams(got) == rs.strip_brams(was)
    # an independent build of the new words lays them into the DP16KDs the same way
    padded = {n: (w, new[n] + [0] * (rs.padded_depth(d) - d)) for n, (w, d) in DEMO_ROMS.items()}
    _, direct, _ = build_demo(cache_dir("test-romswap", "direct"), padded)
    key = lambda t: sorted(v.tobytes() for v in rs.read_brams(t).values())     # noqa: E731 (placement may differ)
    assert key(direct.read_text()) == key(swapped)
    print(json.dumps({"build_s": round(build_s, 1), "steps": {k: round(v, 1) for k, v in times.items()},
                      "swap_s": round(swap_s, 2), "dp16kd": len(rs.read_brams(text))}))
    assert swap_s < 10


# The accelerator's build, yosys and nextpnr stood in for (minutes: the SoC's software, the firmware) ---------

def _fake_routing(placeholders, device):
    """What nextpnr's config would hold: every placeholder column in some DP16KD, 36 to a block (36-bit mode)."""
    cols = [bits[k * 512:(k + 1) * 512, b] for _, bits in sorted(placeholders.items())
            for b in range(bits.shape[1]) for k in range(bits.shape[0] // 512)]
    placed = {str(i // 36): (5, {}) for i in range(len(cols))}
    for i, c in enumerate(cols):
        placed[str(i // 36)][1][i % 36] = c
    text = f".device {device}\n\n"         # (no tiles: ecppack checks them against the device's database)
    return text + _synthetic_config(placed).split(".tile R2C2")[0].split("arc: A B\n\n", 1)[1]


@pytest.mark.slow
def test_accelerator_build_routes_once_and_swaps(tiny, monkeypatch):
    """build_bitstream's model path with yosys and nextpnr stood in for (a real build takes most of an hour): the
    yosys script forces the B-ROMs into block RAM, the B-ROMs and the CPU ROM hold placeholders, the routed design
    is found in (a config laid out from them), ecppack runs for real, `roma build` swaps the model in and
    `roma swap` proves it from the unpacked bitstream; a model of the same geometry reuses the routed design."""
    import re
    import shutil

    import roma.boards.bitstream as bs
    from roma.boards import get_board
    from roma.boards.model_swap import placeholders, verify_bitstream
    from roma.boards.sim import _rom_init_name
    from roma.host.cache import cache_dir
    from roma.host.cli import main
    from roma.soc.config import AccelConfig

    root = cache_dir("test-romswap", "accel")      # (under the cache: YoWASP's tools cannot see /tmp)
    shutil.rmtree(root)
    monkeypatch.setenv("ROMA_CACHE", str(root))
    monkeypatch.setattr(bs, "tool_versions", lambda: {"stand-in": 1})
    real_step, steps = bs.run_step, []

    def step(label, cmd, cwd, log, progress=True):
        exe = Path(cmd[0]).name.replace("yowasp-", "")
        steps.append(exe)
        name = "roma_ulx3s"
        if exe == "yosys":
            ys = (cwd / f"{name}.ys").read_text()
            assert re.search(r"^setattr -set ram_style \"block\" \*/\*brom_\*\nsynth_ecp5 ", ys, re.M)
            rom = [int(x, 16) for x in (cwd / _rom_init_name(cwd / f"{name}.v")).read_text().split()]
            state["ph"] = ph = placeholders(tiny, cfg, len(rom), 1)
            assert rom == rs.from_bits(ph["cpu_rom"])
            inits = {f.read_text() for f in cwd.glob("*.init")}
            for n, bits in ph.items():
                w = bits.shape[1]
                assert "".join(f"{x:0{w // 4}x}\n" for x in rs.from_bits(bits)) in inits, n
        elif exe == "nextpnr-ecp5":
            ph = state["ph"]
            (cwd / f"{name}.config").write_text(_fake_routing(ph, "LFE5U-85F"))
            (cwd / "nextpnr_report.json").write_text(json.dumps({
                "utilization": {"DP16KD": {"used": 150, "available": 208}},
                "fmax": {"$glbnet$crg_clkout": {"achieved": 55.0, "constraint": 50.0}}}))
            Path(log).write_text("")
        else:
            return real_step(label, cmd, cwd, log, progress)
        return 0.0

    state = {}
    monkeypatch.setattr(bs, "run_step", step)
    board = get_board("ulx3s")
    # the configuration `roma build --force` takes: the lanes given, the multipliers and vector unit of the
    # closest fit
    from roma.boards.fit import FPGA_PIPELINE, plan
    near = plan(tiny, "85F", context=64, lanes=2).chosen
    cfg = AccelConfig(lanes=2, macs_per_lane=8, multiplier=near.multiplier, vec_lanes=near.vec_lanes,
                      pipeline=FPGA_PIPELINE)
    args = ["--board", "ulx3s", "--model", "tiny-260k", "--lanes", "2", "--force", "--context", "64"]
    assert main(["build", *args, "--no-sim"]) == 0
    assert steps == ["yosys", "nextpnr-ecp5", "ecppack"]
    t0 = time.monotonic()
    assert main(["swap", *args]) == 0                   # the swap cached, the proof from the bitstream
    assert time.monotonic() - t0 < 60
    # another model of the same geometry: the same routed design, its own bitstream, proven
    other = _other_model(tiny, "matrices")
    b = bs.build_bitstream(board, other, cfg, 64, progress=False)
    assert steps == ["yosys", "nextpnr-ecp5", "ecppack"] and not b.cached
    bad, _ = verify_bitstream(b, other, cfg)
    assert bad == []
    first = bs.build_bitstream(board, tiny, cfg, 64, progress=False)
    assert first.cached and first.bitstream != b.bitstream
    assert verify_bitstream(first, other, cfg)[0] != []          # and it is not the first model's


@pytest.mark.synth
@pytest.mark.slow
def test_swap_tiny_brom_into_85f(tiny):
    """tiny-260k's whole B-ROM at 2 lanes x 8 MACs (12 ROMs, 1.4 Mbit: L and D units' codes, scales, row exponents)
    as RomDemo's memories with placeholders on an 85F, then the model's real words swapped in: every word read back
    from the unpacked .bit, nothing else changed, the swap seconds against a build of a minute or more."""
    from roma.boards.rom_demo import build_demo
    from roma.gateware.accel_build import rom_contents
    from roma.host.cache import cache_dir
    from roma.soc.config import AccelConfig

    real = rom_contents(tiny, AccelConfig(lanes=2, macs_per_lane=8))
    ph = {n: rs.placeholder_bits(n, w, rs.padded_depth(len(words))) for n, (w, words) in real.items()}
    folder = cache_dir("test-romswap", "tiny-85f")
    t0 = time.monotonic()
    times, config, bit = build_demo(folder, {n: (b.shape[1], rs.from_bits(b)) for n, b in ph.items()},
                                    device="--85k", package="CABGA381")
    build_s = time.monotonic() - t0
    new = {n: words for n, (_, words) in real.items()}
    t0 = time.monotonic()
    text = config.read_text()
    rmap = rs.locate(text, ph)
    (folder / "swapped.config").write_text(rs.swap_config(text, rmap, new))
    rs.ecppack(folder / "swapped.config", folder / "swapped.bit")
    swap_s = time.monotonic() - t0
    got = rs.ecpunpack(folder / "swapped.bit", folder / "swapped.unpacked.config")
    assert rs.check_config(got, rmap, new) == []
    assert rs.strip_brams(got) == rs.strip_brams(rs.ecpunpack(bit, folder / "placeholder.unpacked.config"))
    print(json.dumps({"build_s": round(build_s, 1), "steps": {k: round(v, 1) for k, v in times.items()},
                      "swap_s": round(swap_s, 2), "dp16kd": len(rs.read_brams(text))}))
    assert swap_s < build_s / 5

"""A model swapped into a routed accelerator design (boards/rom_swap.py does the block RAM rewriting).

build_bitstream() routes the ROMA SoC once per geometry with placeholder contents in every B-ROM (the L unit's
matrices, the D unit's LM head and embedding) and in the CPU's ROM, then swaps the model in:
  B-ROMs       rom_contents(model, cfg): codes, scales, row exponents per unit and lane;
  the CPU ROM  the firmware compiled for the model against the routed SoC's headers (it carries the model's
               name, content hash and token program).
What the swap cannot reach stays in the routed design's key (routed_hash): the model's configuration and its
norm weights (the vector unit's gamma memory is a small RAM yosys puts in LUT RAM, not in a DP16KD) and with
them the RoPE tables. Models that differ only in their matrices and embedding share one routed design.

Layout of a build folder (bit/<board>-<variant>-<model>-<key>/):
  gateware/roma_<board>.placeholder.bit   the routed design with placeholders (never load it on a board)
  gateware/roma_<board>.config            nextpnr's textual config, the swap's input
  gateware/rommap.json                    where every ROM column lives (rom_swap.RomMap)
  models/<name>-<hash>/roma_<board>.bit   a model swapped in, with its report.json
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from roma.host.errors import RomaError

from . import rom_swap as rs

CPU_ROM = "cpu_rom"


def routed_hash(model, cfg):
    """What a routed design depends on of a model besides its swappable ROMs' words: configuration (but its name,
    which only the firmware carries; the SoC's ident does not name the model), norm weights, the shape of every
    ROM (width, padded depth) and the embedding's format (its code width and signedness set the LM head's
    arithmetic): two models differing there need two routed designs."""
    from roma.gateware.accel_build import rom_contents
    from roma.host.export import to_device
    c = {k: v for k, v in model.config.to_dict().items() if k != "name"}
    hq = to_device(model.embed)
    c["roms"] = sorted((n, w, rs.padded_depth(len(words))) for n, (w, words) in rom_contents(model, cfg).items())
    c["embed"] = (hq.bits, bool(hq.signed))
    h = hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode())
    for a in [L.attn_norm for L in model.layers] + [L.ffn_norm for L in model.layers] + [model.final_norm]:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()


def placeholders(model, cfg, rom_words, seed):
    """{name: (depth, width) bits} of every swappable ROM's placeholder, as the routed design holds them."""
    from roma.gateware.accel_build import rom_contents
    roms = {n: (w, len(words)) for n, (w, words) in rom_contents(model, cfg).items()}
    roms[CPU_ROM] = (32, rom_words)
    return {n: rs.placeholder_bits(n, w, rs.padded_depth(d), seed) for n, (w, d) in roms.items()}


def firmware_words(firmware):
    from litex.soc.integration.soc_core import get_mem_data
    return get_mem_data(str(firmware), data_width=32, endianness="little")


def model_contents(model, cfg, firmware, rom_words):
    """{name: words} to swap in: the model's B-ROMs and the firmware (zero-padded by the swap)."""
    from roma.gateware.accel_build import rom_contents
    out = {n: words for n, (_, words) in rom_contents(model, cfg).items()}
    fw = firmware_words(firmware)
    if len(fw) > rom_words:
        raise RomaError(f"firmware of {4 * len(fw)} bytes does not fit the {4 * rom_words}-byte ROM")
    out[CPU_ROM] = fw
    return out


def locate_roms(gw, name, model, cfg, rom_words, seed):
    """After the routed build: the ROM map, saved beside the config."""
    rmap = rs.locate((gw / f"{name}.config").read_text(), placeholders(model, cfg, rom_words, seed))
    (gw / "rommap.json").write_text(rmap.to_json())
    return rmap


def swap_model(routed, model, cfg, context, progress=True):
    """The model in a routed build (bitstream.BoardBuild with placeholders): compiles its firmware against the
    routed SoC, rewrites the ROMs in nextpnr's config, checks every ROM word in the result, runs ecppack.
    Returns a BoardBuild of the swapped bitstream (cached by the model's content hash)."""
    from roma.firmware.build import build_firmware

    from .bitstream import BoardBuild

    r = routed.report
    name = Path(r["routed_bitstream"]).name.split(".")[0]
    folder = routed.folder / "models" / f"{model.config.name}-{model.content_hash()[:16]}"
    bit, report_path = folder / f"{name}.bit", folder / "report.json"
    if bit.exists() and report_path.exists():
        return BoardBuild(folder, bit, json.loads(report_path.read_text()), True)
    folder.mkdir(parents=True, exist_ok=True)
    gw = routed.folder / "gateware"
    t0 = time.monotonic()
    fw = build_firmware(routed.folder, model, cfg, context, progress=progress)
    t_fw = time.monotonic() - t0
    t0 = time.monotonic()
    rmap = rs.RomMap.from_json((gw / "rommap.json").read_text())
    contents = model_contents(model, cfg, fw, rmap.roms[CPU_ROM][1])
    text = rs.swap_config((gw / f"{name}.config").read_text(), rmap, contents)
    bad = rs.check_config(text, rmap, contents)
    if bad:
        raise RomaError("the swapped config does not hold the model: " + "; ".join(bad))
    (folder / f"{name}.config").write_text(text)
    t_swap = time.monotonic() - t0
    t_pack = rs.ecppack(folder / f"{name}.config", bit)
    seconds = {"firmware": round(t_fw, 2), "rewrite": round(t_swap, 2), "ecppack": round(t_pack, 2)}
    report = dict(r, model=model.config.name, bitstream=str(bit), firmware_bytes=fw.stat().st_size,
                  swap={"seconds": seconds, "roms": len(rmap.roms), "words": sum(d for _, d in rmap.roms.values()),
                        "check": "ok"})
    report_path.write_text(json.dumps(report, indent=1))
    return BoardBuild(folder, bit, report, False)


def verify_bitstream(build, model, cfg):
    """The proof from the bitstream itself: ecpunpack the swapped .bit and compare every ROM word with the model's
    export and firmware. Returns (mismatches, seconds)."""
    from roma.firmware.build import build_firmware
    t0 = time.monotonic()
    gw = build.folder.parent.parent / "gateware"
    rmap = rs.RomMap.from_json((gw / "rommap.json").read_text())
    text = rs.ecpunpack(build.bitstream, build.folder / "unpacked.config")
    fw = build_firmware(build.folder.parent.parent, model, cfg, build.report.get("context"), progress=False)
    bad = rs.check_config(text, rmap, model_contents(model, cfg, fw, rmap.roms[CPU_ROM][1]))
    return bad, time.monotonic() - t0

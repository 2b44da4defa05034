"""The accelerator for a model: its B-ROM images (the export's bank layout), norm weights, RoPE tables, the LM
head's ROM (which also holds the embedding rows) and SRAM sized for the KV cache plus an adapter.

One function serves the Verilator harness (accel_sim.py) and the SoC (soc/accel_core.py), so both elaborate
exactly the same hardware for a model and configuration."""

from dataclasses import dataclass

from roma.host.export import bank_layout, matrix_list
from roma.host.golden import functions as F
from roma.host.golden.numerics import GROUP
from roma.host.golden.weights import to_device
from roma.soc.config import ConfigError

from .accelerator import Accelerator
from .program import Geometry
from .rom_image import BankImage, bank_images, padded_depth, placeholder_words
from .vector_unit import GAMMA_BITS
from .words import pack

MAX_CMDS = 512      # at least; a model whose token program is longer gets a command memory that holds it


@dataclass
class AccelBuild:
    dut: Accelerator
    geo: Geometry
    table: list             # the L-unit's matrix table (bank_layout)
    vm: dict                # VM regions
    head_bits: int
    head_signed: bool
    lora_groups: int        # H-unit capacity per bank (KV cache first, then adapters)
    lora_rows: int
    n_cmds: int             # the base token program's length (at command 0)
    max_cmds: int           # the command memory's depth: an adapter's program is loaded after the base one


def sram_bits(cfg, groups, rows):
    """H-unit SRAM: per bank, the weight words (KV cache, adapters), a row exponent per row, a group exponent per
    group."""
    return cfg.lanes * (groups * GROUP * cfg.act_bits + (rows + groups) * cfg.exp_bits)


def check_capacity(model, cfg, geo, groups, rows):
    from roma.host.report import rom_bits
    need = rom_bits(model)["total"]
    if cfg.rom_bits and need > cfg.rom_bits:
        raise ConfigError(f"rom_bits={cfg.rom_bits:,}: {model.config.name} needs {need:,} bits of B-ROM "
                          f"({need / cfg.rom_bits:.1f}x the configured capacity)")
    need = sram_bits(cfg, groups, rows)
    if cfg.sram_bits and need > cfg.sram_bits:
        raise ConfigError(f"sram_bits={cfg.sram_bits:,}: the KV cache for context={geo.context} (and the adapter) "
                          f"need {need:,} bits of H-unit SRAM")


# B-ROM contents by name (for the ROM swap, boards/rom_swap.py) ----------------------------------------------

def _bank_images(model, cfg):
    """The B-ROM images: the L unit's per lane (the matrices), the D unit's (the embedding, also the LM head),
    and the embedding's device format."""
    hq = to_device(model.embed)
    layout = bank_layout([(n, to_device(q)) for n, q in matrix_list(model)], cfg.lanes)
    return layout, bank_images(layout, cfg), bank_images(bank_layout([("embed", hq)], cfg.lanes), cfg, hq.bits), hq


def rom_contents(model, cfg):
    """{name: (width, words)} of every B-ROM: per unit (L: the matrices, D: the LM head/embedding) and lane, the
    codes, the scales and the row exponents, as GEMVUnit makes its Memories of them."""
    _, l_images, d_images, hq = _bank_images(model, cfg)
    return _contents(cfg, l_images, d_images, hq.bits)


def _contents(cfg, l_images, d_images, head_bits):
    out = {}
    for unit, images, bits in (("L", l_images, cfg.code_bits), ("D", d_images, head_bits)):
        for lane, img in enumerate(images):
            out[f"{unit}{lane}.codes"] = (cfg.macs_per_lane * bits, img.codes or [0])
            out[f"{unit}{lane}.scales"] = (2 * cfg.scale_bits, img.scales or [0])
            out[f"{unit}{lane}.rowexp"] = (cfg.exp_bits, img.rowexp or [0])
    return out


def placeholder_images(contents, unit, lanes, seed):
    """BankImages of a unit's placeholder ROMs (depths padded to whole 512-word columns) in place of the model's,
    for a routed design the model is swapped into afterwards (boards/rom_swap.py)."""
    def ph(name):
        width, words = contents[name]
        return placeholder_words(name, width, padded_depth(len(words)), seed)
    return [BankImage(ph(f"{unit}{b}.codes"), ph(f"{unit}{b}.scales"), ph(f"{unit}{b}.rowexp")) for b in range(lanes)]


def build_accelerator(model, cfg, context=None, lora_size=None, max_cmds=MAX_CMDS, placeholder_seed=None,
                      gate_clocks=False):
    """lora_size: (groups, rows) per H bank for the KV cache and adapters (LoraPlan's figures), or None for
    the KV cache alone. placeholder_seed: B-ROMs hold placeholder words (placeholder_images), not the model's.
    gate_clocks: the simulator's idle units unclocked (Accelerator)."""
    c = model.config
    if model.lm_head is not None:
        raise ConfigError(f"{c.name}: untied LM head; the accelerator reads embedding rows from the head's ROM")
    for name, n in (("dim", c.dim), ("hidden", c.hidden), ("head_dim", c.head_dim), ("vocab", c.vocab)):
        if n % GROUP:
            raise ConfigError(f"{c.name}: {name}={n} is not a multiple of the group size {GROUP}")
    if GROUP % cfg.lanes:
        raise ConfigError(f"lanes={cfg.lanes}: the accelerator needs lanes dividing the group size {GROUP} (the KV "
                          "cache and the vector memory's write-back are laid out in groups of 32 across the lanes)")
    geo = Geometry.of(c, cfg.lanes, context)
    if geo.context % GROUP:
        raise ConfigError(f"context={geo.context}: must be a multiple of {GROUP}")
    layout, l_images, d_images, hq = _bank_images(model, cfg)
    # the command memory holds a whole token program (loaded once; only the position changes), and after it
    # room for an adapter's (cfg.lora_rank: up to every projection adapted)
    from roma.host.golden.lora import padded_rank

    from .program import LoraPlan, token_program
    n_cmds = len(token_program(geo, layout[3]))
    full = LoraPlan.full(geo, c, padded_rank(cfg.lora_rank)) if cfg.lora_rank else None
    max_cmds = max(max_cmds, n_cmds + (len(token_program(geo, layout[3], full)) if full else 0))
    if lora_size is None:
        lora_size = (full.groups_per_bank, full.rows_per_bank) if full else \
            (geo.kv_groups_per_bank(), geo.kv_rows_per_bank())
    groups, rows = lora_size
    check_capacity(model, cfg, geo, groups, rows)
    gq = [F.gamma_q(n) for L in model.layers for n in (L.attn_norm, L.ffn_norm)] + [F.gamma_q(model.final_norm)]
    gwords = [pack(g[i:i + GROUP], GAMMA_BITS) for g in gq for i in range(0, len(g), GROUP)]
    cos, sin = F.rope_tables(c.head_dim, geo.context, c.rope_theta)
    vm = geo.vm_layout()
    if placeholder_seed is not None:
        contents = _contents(cfg, l_images, d_images, hq.bits)
        l_images, d_images = (placeholder_images(contents, u, cfg.lanes, placeholder_seed) for u in "LD")
    dut = Accelerator(cfg, l_images, max(c.dim, c.hidden, c.n_heads * c.head_dim), gwords,
                      cos, sin, dim=c.dim, head_dim=c.head_dim, context=geo.context, eps_q=F.eps_q(c.norm_eps),
                      kv_groups_per_bank=groups, kv_rows_per_bank=rows,
                      ve_words=geo.ve_words(), vm_words=vm["words"] + 2, max_cmds=max_cmds,
                      head_images=d_images, head_bits=hq.bits,
                      head_signed=hq.signed, h_act_cols=geo.h_act_layout()["words"] * GROUP,
                      gate_clocks=gate_clocks)
    return AccelBuild(dut, geo, layout[3], vm, hq.bits, hq.signed, groups, rows, n_cmds, max_cmds)

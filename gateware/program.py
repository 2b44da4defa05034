"""Programs for the accelerator's command sequencer: a decoder layer at one position, as a list of commands
(gateware/accelerator.py: CMD_LAYOUT). The firmware builds the same sequence; this is its reference."""

from dataclasses import dataclass

from roma.host.golden.numerics import GROUP

from .accelerator import TARGETS, UNITS, pack_command
from .vector_unit import OPS


def ceil_div(a, b):
    return -(-a // b)


@dataclass
class Geometry:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden: int
    context: int
    lanes: int

    @classmethod
    def of(cls, config, lanes, context=None):
        return cls(config.dim, config.n_layers, config.n_heads, config.n_kv_heads, config.head_dim, config.hidden,
                   context or config.context, lanes)

    # VM regions (word addresses) ---------------------------------------------------------------------
    def vm_layout(self):
        D, Q, KVD, F = self.dim // GROUP, self.n_heads * self.head_dim // GROUP, \
            self.n_kv_heads * self.head_dim // GROUP, self.hidden // GROUP
        C = self.context // GROUP
        regions = [("X", D), ("HN", D), ("QKV", Q + 2 * KVD), ("ATT", Q), ("TMP", D), ("GU", 2 * F), ("MM", F),
                   ("SC", C), ("E", C), ("P", C)]
        out, off = {}, 0
        for name, n in regions:
            out[name] = off
            off += n
        out["words"] = off
        return out

    # H-unit KV layout (group indices per bank) and VE words ------------------------------------------
    @property
    def G(self):
        return self.head_dim // GROUP

    def k_base(self, layer, kh):
        return (layer * self.n_kv_heads + kh) * (self.context // self.lanes) * self.G

    def v_base(self, layer, kh):
        k_total = self.n_layers * self.n_kv_heads * (self.context // self.lanes) * self.G
        per = self.G * (GROUP // self.lanes) * (self.context // GROUP)
        return k_total + (layer * self.n_kv_heads + kh) * per

    def kv_groups_per_bank(self):
        return self.v_base(self.n_layers, 0)

    def ve_base(self, layer, kh):
        return (layer * self.n_kv_heads + kh) * self.G * (self.context // GROUP)

    def ve_words(self):
        return self.ve_base(self.n_layers, 0)


def layer_program(geo, table, layer, pos):
    """Commands (dicts) that run decoder layer `layer` on the vector in VM region X at position `pos`."""
    vm = geo.vm_layout()
    D, F, G = geo.dim // GROUP, geo.hidden // GROUP, geo.G
    H, KV, hd = geo.n_heads, geo.n_kv_heads, geo.head_dim
    Qw = H * G
    count = pos + 1
    m = {e["name"].split(".")[-1]: e for e in table[layer * 7:(layer + 1) * 7]}
    cmds = []

    def v(op, **kw):
        cmds.append(dict(unit=UNITS["V"], op=OPS[op], **kw))

    def gemv(unit, **kw):
        cmds.append(dict(unit=UNITS[unit], **kw))

    def norm(which):
        v("rms_max", a=vm["X"], n=D)
        v("rms_ss", a=vm["X"], n=D)
        v("norm", a=vm["X"], dst=vm["HN"], n=D, aux=(2 * layer + which) * D)
        v("quant", a=vm["HN"], n=D, dst=0, tgt=TARGETS["L"])

    # attention ---------------------------------------------------------------------------------------------
    norm(0)
    q, k, vv = m["q_proj"], m["k_proj"], m["v_proj"]
    gemv("L", word_base=q["word_offset"], row_base=q["row_offset"],
         rows=q["rows_per_bank"] + k["rows_per_bank"] + vv["rows_per_bank"], groups=D, dst=vm["QKV"])
    v("rope", a=vm["QKV"], n=H, aux=pos)
    v("rope", a=vm["QKV"] + Qw, n=KV, aux=pos)
    for kh in range(KV):
        v("quant", a=vm["QKV"] + Qw + kh * G, n=G, dst=0, tgt=TARGETS["K"], pos=pos, kv_base=geo.k_base(layer, kh))
        v("quant", a=vm["QKV"] + Qw + KV * G + kh * G, n=G, dst=0, tgt=TARGETS["V"], pos=pos,
          kv_base=geo.v_base(layer, kh), ve_base=geo.ve_base(layer, kh))
    rep = H // KV
    words = ceil_div(count, GROUP)
    gctx = geo.context // GROUP
    for h in range(H):
        kh = h // rep
        v("quant", a=vm["QKV"] + h * G, n=G, dst=0, tgt=TARGETS["H"])
        gemv("H", word_base=geo.k_base(layer, kh), row_base=0, rows=ceil_div(count, geo.lanes), groups=G,
             stride=G, dst=vm["SC"])
        v("sm_max", a=vm["SC"], n=words, count=count)
        v("sm_exp", a=vm["SC"], dst=vm["E"], n=words, count=count)
        v("sm_norm", a=vm["E"], dst=vm["P"], n=words)
        for g in range(G):
            v("avec", a=vm["P"], n=words, aux=geo.ve_base(layer, kh) + g * gctx, dst=0, tgt=TARGETS["H"])
            gemv("H", word_base=geo.v_base(layer, kh) + g * (GROUP // geo.lanes) * gctx, row_base=0,
                 rows=GROUP // geo.lanes, groups=words, stride=gctx, dst=vm["ATT"] + h * G + g)
    v("quant", a=vm["ATT"], n=Qw, dst=0, tgt=TARGETS["L"])
    o = m["o_proj"]
    gemv("L", word_base=o["word_offset"], row_base=o["row_offset"], rows=o["rows_per_bank"], groups=Qw,
         dst=vm["TMP"])
    v("add", a=vm["X"], b=vm["TMP"], dst=vm["X"], n=D)
    # MLP ------------------------------------------------------------------------------------------------------
    norm(1)
    gt, up, dn = m["gate_proj"], m["up_proj"], m["down_proj"]
    gemv("L", word_base=gt["word_offset"], row_base=gt["row_offset"],
         rows=gt["rows_per_bank"] + up["rows_per_bank"], groups=D, dst=vm["GU"])
    v("silu", a=vm["GU"], b=vm["GU"] + F, dst=vm["MM"], n=F)
    v("quant", a=vm["MM"], n=F, dst=0, tgt=TARGETS["L"])
    gemv("L", word_base=dn["word_offset"], row_base=dn["row_offset"], rows=dn["rows_per_bank"], groups=F,
         dst=vm["TMP"])
    v("add", a=vm["X"], b=vm["TMP"], dst=vm["X"], n=D)
    return cmds


def packed(cmds):
    return [pack_command(**c) for c in cmds]

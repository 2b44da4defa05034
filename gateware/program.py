"""Programs for the accelerator's command sequencer: a decoder layer at one position, as a list of commands
(gateware/accelerator.py: CMD_LAYOUT). The firmware builds the same sequence; this is its reference."""

from dataclasses import dataclass

from roma.host.golden.numerics import GROUP

from .accelerator import DYN, TARGETS, UNITS, pack_command
from .vector_unit import OPS


MAX_RANK_WORDS = 2      # LoRA rank up to 64, padded to whole groups of 32


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
    vocab: int = 0

    @classmethod
    def of(cls, config, lanes, context=None):
        return cls(config.dim, config.n_layers, config.n_heads, config.n_kv_heads, config.head_dim, config.hidden,
                   context or config.context, lanes, config.vocab)

    # VM regions (word addresses) ---------------------------------------------------------------------
    def vm_layout(self):
        D, Q, KVD, F = self.dim // GROUP, self.n_heads * self.head_dim // GROUP, \
            self.n_kv_heads * self.head_dim // GROUP, self.hidden // GROUP
        C = self.context // GROUP
        regions = [("X", D), ("HN", D), ("QKV", Q + 2 * KVD), ("ATT", Q), ("TMP", D), ("GU", 2 * F), ("MM", F),
                   ("SC", C), ("E", C), ("P", C), ("LT", 7 * MAX_RANK_WORDS), ("LU", max(F, Q, D)),
                   ("LOGITS", self.vocab // GROUP)]
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

    def kv_rows_per_bank(self):
        """Rows any KV GEMV uses (row exponents all 0 there); LoRA rows follow."""
        return max(self.context // self.lanes, GROUP // self.lanes)


class LoraPlan:
    """Where each adapted projection's A (padded to R rows) and B (R columns) live in the H-unit's banks."""

    def __init__(self, geo, dev_lora, config):
        self.R = dev_lora.rank_padded
        self.entries = {}
        group, row = geo.kv_groups_per_bank(), geo.kv_rows_per_bank()
        for (layer, proj), path in sorted(dev_lora.paths.items()):
            out, inp = config.projection_shape(proj)
            e = {}
            for part, rows, cols in (("A", self.R, inp), ("B", out, self.R)):
                per = rows // geo.lanes
                e[part] = dict(word_base=group, row_base=row, rows=per, groups=cols // GROUP)
                group += per * (cols // GROUP)
                row += per
            e["path"] = path
            self.entries[(layer, proj)] = e
        self.groups_per_bank, self.rows_per_bank = group, row

    def layer(self, layer):
        return {p: e for (l_, p), e in self.entries.items() if l_ == layer}


def layer_program(geo, table, layer, lora=None, fresh_x=True):
    """Commands (dicts) that run decoder layer `layer` on the vector in VM region X at the position in the
    accelerator's position register (the position-dependent fields are `dyn`, so one program serves all);
    with a LoraPlan, each adapted projection's output gets its LoRA delta before anything reads it.
    fresh_x: X was loaded from outside, so the first RMSNorm needs its own max pass (otherwise the residual
    ADD that wrote X left its pre-shift in the vector unit)."""
    vm = geo.vm_layout()
    D, F, G = geo.dim // GROUP, geo.hidden // GROUP, geo.G
    H, KV = geo.n_heads, geo.n_kv_heads
    Qw = H * G
    m = {e["name"].split(".")[-1]: e for e in table[layer * 7:(layer + 1) * 7]}
    cmds = []

    def v(op, **kw):
        cmds.append(dict(unit=UNITS["V"], op=OPS[op], **kw))

    def gemv(unit, **kw):
        cmds.append(dict(unit=UNITS[unit], **kw))

    adapted = lora.layer(layer) if lora is not None else {}
    rw = lora.R // GROUP if lora is not None else 0

    def lora_pass(projs, outs):
        """After the base GEMV: A for every adapted projection (the H act still holds their shared input),
        then for each: quantize t, B, and add the delta to the base output at `outs[p]`."""
        todo = [p for p in projs if p in adapted]
        for k, p in enumerate(todo):
            a = adapted[p]["A"]
            gemv("H", **a, dst=vm["LT"] + k * rw)
        for k, p in enumerate(todo):
            b = adapted[p]["B"]
            v("quant", a=vm["LT"] + k * rw, n=rw, tgt=TARGETS["H"])
            gemv("H", **b, dst=vm["LU"])
            v("add", a=outs[p], b=vm["LU"], dst=outs[p], n=b["rows"] * geo.lanes // GROUP)

    def dual(projs):
        return int(any(p in adapted for p in projs))

    def norm(which, projs):
        if which == 0 and fresh_x:
            v("rms_max", a=vm["X"], n=D)
        v("rms_ss", a=vm["X"], n=D)
        v("norm", a=vm["X"], dst=vm["HN"], n=D, aux=(2 * layer + which) * D, qout=1, tgt=TARGETS["L"],
          dual=dual(projs))

    # attention ---------------------------------------------------------------------------------------------
    norm(0, ("q_proj", "k_proj", "v_proj"))
    q, k, vv = m["q_proj"], m["k_proj"], m["v_proj"]
    gemv("L", word_base=q["word_offset"], row_base=q["row_offset"],
         rows=q["rows_per_bank"] + k["rows_per_bank"] + vv["rows_per_bank"], groups=D, dst=vm["QKV"])
    lora_pass(("q_proj", "k_proj", "v_proj"), {"q_proj": vm["QKV"], "k_proj": vm["QKV"] + Qw,
                                               "v_proj": vm["QKV"] + Qw + KV * G})
    # the q heads, then the k heads right after them
    v("rope", a=vm["QKV"], n=H + KV, dyn=DYN["aux_pos"])
    for kh in range(KV):
        v("quant", a=vm["QKV"] + Qw + kh * G, n=G, tgt=TARGETS["K"], dyn=DYN["kv_pos"], kv_base=geo.k_base(layer, kh))
        v("quant", a=vm["QKV"] + Qw + KV * G + kh * G, n=G, tgt=TARGETS["V"], dyn=DYN["kv_pos"],
          kv_base=geo.v_base(layer, kh), ve_base=geo.ve_base(layer, kh))
    rep = H // KV
    gctx = geo.context // GROUP
    for h in range(H):
        kh = h // rep
        v("quant", a=vm["QKV"] + h * G, n=G, tgt=TARGETS["H"])
        gemv("H", word_base=geo.k_base(layer, kh), row_base=0, dyn=DYN["rows_krows"], groups=G, stride=G,
             dst=vm["SC"])
        v("sm_max", a=vm["SC"], dyn=DYN["n_words_count"])
        v("sm_exp", a=vm["SC"], dst=vm["E"], dyn=DYN["n_words_count"])
        for g in range(G):
            # the probabilities scaled by V's exponents of group g: SM_NORM makes them for group 0
            ve = geo.ve_base(layer, kh) + g * gctx
            if g == 0:
                v("sm_norm", a=vm["E"], dst=vm["P"], dyn=DYN["n_words"], aux=ve, qout=1, tgt=TARGETS["H"])
            else:
                v("avec", a=vm["P"], dyn=DYN["n_words"], aux=ve, tgt=TARGETS["H"])
            gemv("H", word_base=geo.v_base(layer, kh) + g * (GROUP // geo.lanes) * gctx, row_base=0,
                 rows=GROUP // geo.lanes, dyn=DYN["groups_words"], stride=gctx, dst=vm["ATT"] + h * G + g)
    v("quant", a=vm["ATT"], n=Qw, tgt=TARGETS["L"], dual=dual(("o_proj",)))
    o = m["o_proj"]
    gemv("L", word_base=o["word_offset"], row_base=o["row_offset"], rows=o["rows_per_bank"], groups=Qw,
         dst=vm["TMP"])
    lora_pass(("o_proj",), {"o_proj": vm["TMP"]})
    v("add", a=vm["X"], b=vm["TMP"], dst=vm["X"], n=D)
    # MLP ------------------------------------------------------------------------------------------------------
    norm(1, ("gate_proj", "up_proj"))
    gt, up, dn = m["gate_proj"], m["up_proj"], m["down_proj"]
    gemv("L", word_base=gt["word_offset"], row_base=gt["row_offset"],
         rows=gt["rows_per_bank"] + up["rows_per_bank"], groups=D, dst=vm["GU"])
    lora_pass(("gate_proj", "up_proj"), {"gate_proj": vm["GU"], "up_proj": vm["GU"] + F})
    v("silu", a=vm["GU"], b=vm["GU"] + F, dst=vm["MM"], n=F, qout=1, tgt=TARGETS["L"], dual=dual(("down_proj",)))
    gemv("L", word_base=dn["word_offset"], row_base=dn["row_offset"], rows=dn["rows_per_bank"], groups=F,
         dst=vm["TMP"])
    lora_pass(("down_proj",), {"down_proj": vm["TMP"]})
    v("add", a=vm["X"], b=vm["TMP"], dst=vm["X"], n=D)
    return cmds


def packed(cmds):
    return [pack_command(**c) for c in cmds]


def head_program(geo):
    """Final RMSNorm (its pre-shift left by the last layer's ADD), the LM head and the greedy choice: ARGMAX
    leaves the next token in the vector unit."""
    vm = geo.vm_layout()
    D, V = geo.dim // GROUP, geo.vocab // GROUP
    return [
        dict(unit=UNITS["V"], op=OPS["rms_ss"], a=vm["X"], n=D),
        dict(unit=UNITS["V"], op=OPS["norm"], a=vm["X"], dst=vm["HN"], n=D, aux=2 * geo.n_layers * D, qout=1,
             to_head=1),
        dict(unit=UNITS["D"], word_base=0, row_base=0, rows=geo.vocab // geo.lanes, groups=D, dst=vm["LOGITS"]),
        dict(unit=UNITS["V"], op=OPS["argmax"], a=vm["LOGITS"], n=V, count=geo.vocab),
    ]


def token_program(geo, table, lora=None):
    """Every decoder layer, then the head: one token's forward pass at the position register's value."""
    cmds = []
    for layer in range(geo.n_layers):
        cmds += layer_program(geo, table, layer, lora, fresh_x=layer == 0)
    return cmds + head_program(geo)

"""Programs for the accelerator's command sequencer: a decoder layer at one position, as a list of commands
(gateware/accelerator.py: CMD_LAYOUT). The firmware builds the same sequence; this is its reference."""

from dataclasses import dataclass

from roma.host.golden.numerics import GROUP

from .accelerator import DYN, TARGETS, UNITS, WAIT, pack_command
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
                   ("SC", 2 * C), ("E", C), ("P", C), ("LT", 7 * MAX_RANK_WORDS), ("LU", max(F, Q, D)),
                   ("LOGITS", self.vocab // GROUP)]
        out, off = {}, 0
        for name, n in regions:
            out[name] = off
            off += n
        out["words"] = off
        return out

    # L-unit activation buffer: two regions, so that a GEMV's input for the next GEMV can be written while
    # the GEMV still reads its own (the H act mirrors them for LoRA passes)
    def l_act_regions(self):
        return 0, max(self.dim, self.hidden, self.n_heads * self.head_dim) // GROUP

    # H-unit activation buffer: two regions for probabilities (one head's weighted V sum runs while the next
    # head's softmax writes the other), then every q head (quantized once for all heads)
    def h_act_layout(self):
        C, G = self.context // GROUP, self.G
        return {"P": (0, C), "Q": 2 * C, "words": max(2 * C + self.n_heads * G, 2 * self.l_act_regions()[1])}

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

    @classmethod
    def full(cls, geo, config, rank_padded):
        """The plan of an adapter on every projection of every layer: the H-unit capacity a device built
        for adapters of up to this (padded) rank reserves after the KV cache."""
        from types import SimpleNamespace

        from roma.host.model import PROJECTIONS
        paths = {(layer, p): None for layer in range(geo.n_layers) for p in PROJECTIONS}
        return cls(geo, SimpleNamespace(rank_padded=rank_padded, paths=paths), config)

    def fits(self, capacity):
        """capacity: the device's (groups, rows) per bank."""
        return self.groups_per_bank <= capacity[0] and self.rows_per_bank <= capacity[1]


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

    lact = geo.l_act_regions()

    def lora_pass(projs, outs, abase):
        """After the base GEMV: A for every adapted projection (the H act still holds their shared input, from
        word `abase`), then for each: quantize t, B, and add the delta to the base output at `outs[p]`."""
        todo = [p for p in projs if p in adapted]
        for k, p in enumerate(todo):
            a = adapted[p]["A"]
            gemv("H", **a, dst=vm["LT"] + k * rw, abase=abase)
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
          dual=dual(projs), abase=lact[0])

    # attention ---------------------------------------------------------------------------------------------
    norm(0, ("q_proj", "k_proj", "v_proj"))
    q, k, vv = m["q_proj"], m["k_proj"], m["v_proj"]
    gemv("L", word_base=q["word_offset"], row_base=q["row_offset"],
         rows=q["rows_per_bank"] + k["rows_per_bank"] + vv["rows_per_bank"], groups=D, dst=vm["QKV"],
         abase=lact[0])
    lora_pass(("q_proj", "k_proj", "v_proj"), {"q_proj": vm["QKV"], "k_proj": vm["QKV"] + Qw,
                                               "v_proj": vm["QKV"] + Qw + KV * G}, lact[0])
    # the q heads, then the k heads right after them
    v("rope", a=vm["QKV"], n=H + KV, dyn=DYN["aux_pos"])
    for kh in range(KV):
        v("quant", a=vm["QKV"] + Qw + kh * G, n=G, tgt=TARGETS["K"], dyn=DYN["kv_pos"], kv_base=geo.k_base(layer, kh))
        v("quant", a=vm["QKV"] + Qw + KV * G + kh * G, n=G, tgt=TARGETS["V"], dyn=DYN["kv_pos"],
          kv_base=geo.v_base(layer, kh), ve_base=geo.ve_base(layer, kh))
    # every q head into the H act at once; then head by head: scores (H), softmax (V), weighted V sum (H),
    # ordered so that head h + 1's scores run during head h's softmax and its V sum during head h + 1's
    hact = geo.h_act_layout()
    v("quant", a=vm["QKV"], n=Qw, tgt=TARGETS["H"], abase=hact["Q"])
    rep = H // KV
    gctx = geo.context // GROUP

    def scores(h):
        gemv("H", word_base=geo.k_base(layer, h // rep), row_base=0, dyn=DYN["rows_krows"], groups=G, stride=G,
             abase=hact["Q"] + h * G, dst=vm["SC"] + (h % 2) * gctx)

    scores(0)
    k = 0
    for h in range(H):
        kh = h // rep
        sc = vm["SC"] + (h % 2) * gctx
        v("sm_max", a=sc, dyn=DYN["n_words_count"])
        if h + 1 < H:
            scores(h + 1)
        v("sm_exp", a=sc, dst=vm["E"], dyn=DYN["n_words_count"])
        for g in range(G):
            # the probabilities scaled by V's exponents of group g (SM_NORM makes them for group 0), into
            # the P region the previous V sum is not reading
            ve = geo.ve_base(layer, kh) + g * gctx
            pbase = hact["P"][k % 2]
            k += 1
            if g == 0:
                v("sm_norm", a=vm["E"], dst=vm["P"], dyn=DYN["n_words"], aux=ve, qout=1, tgt=TARGETS["H"],
                  abase=pbase)
            else:
                v("avec", a=vm["P"], dyn=DYN["n_words"], aux=ve, tgt=TARGETS["H"], abase=pbase)
            gemv("H", word_base=geo.v_base(layer, kh) + g * (GROUP // geo.lanes) * gctx, row_base=0,
                 rows=GROUP // geo.lanes, dyn=DYN["groups_words"], stride=gctx, abase=pbase,
                 dst=vm["ATT"] + h * G + g)
    v("quant", a=vm["ATT"], n=Qw, tgt=TARGETS["L"], dual=dual(("o_proj",)), abase=lact[1])
    o = m["o_proj"]
    gemv("L", word_base=o["word_offset"], row_base=o["row_offset"], rows=o["rows_per_bank"], groups=Qw,
         dst=vm["TMP"], abase=lact[1])
    lora_pass(("o_proj",), {"o_proj": vm["TMP"]}, lact[1])
    v("add", a=vm["X"], b=vm["TMP"], dst=vm["X"], n=D)
    # MLP ------------------------------------------------------------------------------------------------------
    norm(1, ("gate_proj", "up_proj"))
    gt, up, dn = m["gate_proj"], m["up_proj"], m["down_proj"]
    gemv("L", word_base=gt["word_offset"], row_base=gt["row_offset"],
         rows=gt["rows_per_bank"] + up["rows_per_bank"], groups=D, dst=vm["GU"], abase=lact[0])
    lora_pass(("gate_proj", "up_proj"), {"gate_proj": vm["GU"], "up_proj": vm["GU"] + F}, lact[0])
    v("silu", a=vm["GU"], b=vm["GU"] + F, dst=vm["MM"], n=F, qout=1, tgt=TARGETS["L"], dual=dual(("down_proj",)),
      abase=lact[1])
    gemv("L", word_base=dn["word_offset"], row_base=dn["row_offset"], rows=dn["rows_per_bank"], groups=F,
         dst=vm["TMP"], abase=lact[1])
    lora_pass(("down_proj",), {"down_proj": vm["TMP"]}, lact[1])
    v("add", a=vm["X"], b=vm["TMP"], dst=vm["X"], n=D)
    return schedule(geo, cmds)


def accesses(geo, c):
    """What a command reads and writes, as sets of (space, word): VM words, activation-buffer words of the
    L, H and head units ("act.L" ...), and the KV writer's buffer, the H banks and V's exponents (one item
    each). Position-dependent lengths count at their largest (the whole context)."""
    gctx = geo.context // GROUP
    dyn = c.get("dyn", 0)
    n = gctx if dyn in (DYN["n_words_count"], DYN["n_words"]) else c.get("n", 0)

    def span(space, start, count):
        return {(space, w) for w in range(start, start + count)}

    if c["unit"] == UNITS["V"]:
        op, a = c["op"], c.get("a", 0)
        reads, writes = set(), set()
        if op == OPS["rope"]:
            reads = writes = span("vm", a, n * geo.G)
        else:
            reads |= span("vm", a, n)
            if op in (OPS["add"], OPS["silu"]):
                reads |= span("vm", c.get("b", 0), n)
            if op in (OPS["add"], OPS["norm"], OPS["silu"], OPS["sm_exp"], OPS["sm_norm"]):
                writes |= span("vm", c.get("dst", 0), n)
        acts = op in (OPS["quant"], OPS["avec"]) or (c.get("qout") and op in (OPS["norm"], OPS["silu"], OPS["sm_norm"]))
        if op == OPS["avec"] or (op == OPS["sm_norm"] and c.get("qout")):
            reads.add(("ve", 0))
        if acts:
            tgt = c.get("tgt", 0)
            if tgt >= TARGETS["K"]:
                writes.add(("kvbuf", 0))
            else:
                units = ["D" if c.get("to_head") else "L"] if tgt == TARGETS["L"] else []
                units += ["H"] if tgt == TARGETS["H"] or c.get("dual") else []
                for u in units:
                    writes |= span("act." + u, c.get("abase", 0), n)
        return reads, writes
    name = {UNITS["L"]: "L", UNITS["H"]: "H", UNITS["D"]: "D"}[c["unit"]]
    groups = gctx if dyn == DYN["groups_words"] else c.get("groups", 0)
    rows = ceil_div(geo.context, geo.lanes) if dyn == DYN["rows_krows"] else c.get("rows", 0)
    reads = span("act." + name, c.get("abase", 0), groups)
    if name == "H":
        reads.add(("hbank", 0))
    return reads, span("vm", c.get("dst", 0), ceil_div(rows * geo.lanes, GROUP))


KV_ACCESSES = ({("kvbuf", 0)}, {("hbank", 0), ("ve", 0)})


def schedule(geo, cmds):
    """Set each command's `wait` bits: the units whose last command (the one that may still run when this
    one issues) writes what this one reads or writes, or reads what it writes, except a vector op that only
    reads a GEMV's VM output, or a GEMV that only reads a vector op's activation output (they chain). Older
    commands on a unit are done by then (each unit runs one command at a time; GEMV units one among them; the
    KV writer one write)."""
    last = {}
    last_v_kv = False
    for c in cmds:
        reads, writes = accesses(geo, c)
        mine = "V" if c["unit"] == UNITS["V"] else "G"
        wait = 0
        for unit, (r, w) in last.items():
            if unit == mine or not (reads & w or writes & r or writes & w):
                continue
            # a vector op that only reads the running GEMV's VM output chains to it (the hardware holds each
            # read until its word is written)
            # (words it writes that the GEMV writes too must be words it reads first: ROPE in place)
            chained = unit == "G" and mine == "V" and not writes & r and writes & w <= reads & w and \
                all(space == "vm" for space, _ in reads & w)
            # and a GEMV that only reads the running vector op's activation words, likewise
            chained |= unit == "V" and mine == "G" and not writes & (r | w) and \
                all(space.startswith("act.") for space, _ in reads & w)
            if not chained:
                wait |= WAIT[unit]
        # the KV writer starts only when its K/V op finishes: waiting for it means waiting for that op too
        if wait & WAIT["KV"] and last_v_kv and mine != "V":
            wait |= WAIT["V"]
        c["wait"] = wait
        last[mine] = (reads, writes)
        if mine == "V":
            last_v_kv = c.get("tgt", 0) >= TARGETS["K"]
            if last_v_kv:                                       # the KV writer runs after it
                last["KV"] = KV_ACCESSES
    return cmds


def packed(cmds):
    return [pack_command(**c) for c in cmds]


def head_program(geo):
    """Final RMSNorm (its pre-shift left by the last layer's ADD), the LM head and the greedy choice: ARGMAX
    leaves the next token in the vector unit."""
    vm = geo.vm_layout()
    D, V = geo.dim // GROUP, geo.vocab // GROUP
    cmds = [
        dict(unit=UNITS["V"], op=OPS["rms_ss"], a=vm["X"], n=D),
        dict(unit=UNITS["V"], op=OPS["norm"], a=vm["X"], dst=vm["HN"], n=D, aux=2 * geo.n_layers * D, qout=1,
             to_head=1),
        dict(unit=UNITS["D"], word_base=0, row_base=0, rows=geo.vocab // geo.lanes, groups=D, dst=vm["LOGITS"]),
        dict(unit=UNITS["V"], op=OPS["argmax"], a=vm["LOGITS"], n=V, count=geo.vocab),
    ]
    return schedule(geo, cmds)


def token_program(geo, table, lora=None):
    """Every decoder layer, then the head: one token's forward pass at the position register's value."""
    cmds = []
    for layer in range(geo.n_layers):
        cmds += layer_program(geo, table, layer, lora, fresh_x=layer == 0)
    return schedule(geo, cmds + head_program(geo))

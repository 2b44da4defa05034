"""The program builder's scheduling: which `wait` bits a command gets from what it and the running commands of
other units read and write (the bit-exact layer and model runs in Verilator check the result end to end)."""

from roma.gateware.accelerator import DYN, TARGETS, UNITS, WAIT
from roma.gateware.program import Geometry, schedule
from roma.gateware.vector_unit import OPS

GEO = Geometry(dim=64, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=32, hidden=192, context=64, lanes=8)


def gemv(unit="L", **kw):
    return dict(unit=UNITS[unit], **kw)


def vop(op, **kw):
    return dict(unit=UNITS["V"], op=OPS[op], **kw)


def waits(*cmds):
    return [c["wait"] for c in schedule(GEO, list(cmds))]


def test_vector_op_chains_to_the_gemv_whose_output_it_reads():
    # ADD reads the GEMV's output (TMP, words 10-11): it chains, no wait
    assert waits(gemv(rows=8, groups=2, dst=10), vop("add", a=0, b=10, dst=0, n=2)) == [0, 0]


def test_in_place_rope_chains_but_a_write_the_gemv_also_makes_waits():
    assert waits(gemv(rows=16, groups=2, dst=4), vop("rope", a=4, n=3, dyn=DYN["aux_pos"])) == [0, 0]
    # writing a word of the GEMV's output without reading it first: must wait for the GEMV
    assert waits(gemv(rows=16, groups=2, dst=4), vop("add", a=0, b=1, dst=5, n=1)) == [0, WAIT["G"]]


def test_gemv_chains_to_the_activations_it_reads_but_waits_before_overwriting_them():
    norm = vop("norm", a=0, dst=2, n=2, qout=1, tgt=TARGETS["L"], abase=0)
    assert waits(norm, gemv(rows=16, groups=2, abase=0, dst=4)) == [0, 0]
    # SILU writing the activation region the running GEMV reads must wait; into the other region it need not
    silu = dict(a=12, b=18, dst=24, n=6, qout=1, tgt=TARGETS["L"])
    assert waits(gemv(rows=48, groups=2, abase=0, dst=12), vop("silu", **silu, abase=0))[1] == WAIT["G"]
    assert waits(gemv(rows=48, groups=2, abase=0, dst=12), vop("silu", **silu, abase=6))[1] == 0


def test_kv_cache_readers_wait_for_the_kv_writer():
    quant_v = vop("quant", a=7, n=1, tgt=TARGETS["V"], dyn=DYN["kv_pos"])
    scores = gemv("H", word_base=0, dyn=DYN["rows_krows"], groups=1, stride=1, abase=4, dst=30)
    sm_norm = vop("sm_norm", a=32, dst=33, dyn=DYN["n_words"], qout=1, tgt=TARGETS["H"])
    assert waits(quant_v, scores)[1] & WAIT["KV"]
    assert waits(quant_v, sm_norm)[1] & WAIT["KV"]


def test_waiting_for_the_kv_writer_waits_for_the_op_that_starts_it():
    """The KV writer starts when its K/V op finishes: a GEMV right after that op waits for the vector unit too."""
    quant_k = vop("quant", a=6, n=1, tgt=TARGETS["K"], dyn=DYN["kv_pos"])
    scores = gemv("H", word_base=0, dyn=DYN["rows_krows"], groups=1, stride=1, abase=4, dst=30)
    assert waits(quant_k, scores)[1] == WAIT["KV"] | WAIT["V"]

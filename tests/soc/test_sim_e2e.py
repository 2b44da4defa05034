"""The SoC in Verilator, end to end on tiny-260k: the firmware runs every layer on the accelerator and streams
tokens that equal the golden model's, greedy and sampled, with and without a LoRA adapter loaded over the link;
and the link survives bad input and faults, the very next request on the same running device succeeding each
time."""

import struct

import numpy as np
import pytest

from roma.gateware.verilator import verilator_available
from roma.host import protocol as P
from roma.host.generate import GoldenTarget
from roma.host.golden.model import GoldenModel, golden_for
from roma.host.golden.numerics import GROUP
from roma.host.golden.sampler import SamplingParams
from roma.host.link import Device, LinkError, parse_error
from roma.host.tiny import tiny_model
from roma.soc.config import AccelConfig

pytestmark = [pytest.mark.verilator, pytest.mark.skipif(not verilator_available(), reason="verilator is not on PATH")]

CONTEXT = 64
CFG = AccelConfig(lanes=8, macs_per_lane=8, lora_rank=32)


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-260k")


@pytest.fixture(scope="module")
def device(model):
    from roma.boards.sim import SimRunner, build_sim
    build = build_sim(model, CFG, context=CONTEXT, progress=False)
    with SimRunner(build) as sim:
        dev = Device.open(sim.url, timeout=600)
        yield dev
        dev.close()


def golden_tokens(model, prompt, n, params, stops=()):
    return list(GoldenTarget(golden_for(model, None, CONTEXT)).generate(prompt, n, params, set(stops)))


def test_info_describes_the_built_model(device, model):
    info = device.info()
    c = model.config
    assert (info["dim"], info["n_layers"], info["vocab"], info["context"]) == (c.dim, c.n_layers, c.vocab, CONTEXT)
    assert (info["lanes"], info["macs_per_lane"]) == (CFG.lanes, CFG.macs_per_lane)
    assert info["model_hash"] == model.content_hash()[:32] and info["model_name"] == c.name
    assert device.ping(b"hello") == b"hello"


# sampling: the accelerator's ARGMAX run k times gives the top k, the firmware samples among them
@pytest.mark.parametrize("prompt, params, n", [
    ([1, 57, 300], SamplingParams(), 10),
    ([1, 400, 12, 9, 77, 301, 5], SamplingParams(), 10),
    ([1, 57, 300], SamplingParams(temperature=0.8, top_k=20, top_p=0.9, seed=7), 4),
    ([1, 2, 3], SamplingParams(temperature=1.5, top_k=256, top_p=1.0, seed=12345), 2),
])
def test_tokens_equal_the_golden_model(device, model, prompt, params, n):
    want = golden_tokens(model, prompt, n, params)
    events = list(device.generate(prompt, n, params))
    assert [e.token for e in events] == want
    done = device.last_done
    assert done.reason == "MAX_TOKENS" and done.n_new == n and done.n_prompt == len(prompt)
    assert [e.pos for e in events] == list(range(len(prompt), len(prompt) + n))
    # the layers ran on the accelerator: its L-unit multiplied (prefill + 9 decode passes)
    assert done.counters["l_mac"] > 0 and done.decode_cycles > 0 and all(e.cycles > 0 for e in events)


def test_every_layer_equals_the_golden_model(device, model):
    """Per-layer checks: the residual stream after each layer, read back from the vector memory, at each
    position as the KV cache fills."""
    from roma.gateware.accel_build import build_accelerator
    from roma.gateware.program import layer_program
    acc = build_accelerator(model, CFG, CONTEXT)
    ends = np.cumsum([len(layer_program(acc.geo, acc.table, i, fresh_x=i == 0)) for i in range(model.config.n_layers)])
    g = GoldenModel(model, context=CONTEXT)
    st = g.new_state()
    for pos, tok in enumerate([1, 57, 300]):
        trace = []
        g.forward([tok], st, trace=trace)
        for layer, n in enumerate(ends):
            device.embed(tok)
            device.run(pos, int(n))
            x = device.read_vm(acc.vm["X"] * GROUP, model.config.dim)
            assert np.array_equal(x, trace[layer][0]), f"position {pos}, layer {layer}"


def test_stop_token_and_context_end(device, model):
    prompt = [1, 57, 300]
    free = golden_tokens(model, prompt, 6, SamplingParams())
    stop = free[3]
    got = [e.token for e in device.generate(prompt, 20, SamplingParams(), [stop])]
    assert got == golden_tokens(model, prompt, 20, SamplingParams(), [stop]) and got[-1] == stop
    assert device.last_done.reason == "STOP"
    # asking for more than the cache holds: generation ends at the context, as the golden model's does
    long = list(range(1, CONTEXT - 4))
    got = [e.token for e in device.generate(long, 50, SamplingParams())]
    assert got == golden_tokens(model, long, 50, SamplingParams())
    assert len(long) + len(got) == CONTEXT and device.last_done.reason == "CONTEXT"


def raw_error(dev, data, timeout=30):
    dev.link.write_raw(data)
    f = dev.link.recv(timeout)
    assert f.type == P.TYPES["ERROR"], P.type_name(f.type)
    return P.error_name(parse_error(f.payload)[0])


def test_broken_frames_get_errors_and_the_device_stays_usable(device):
    good = P.frame(P.TYPES["PING"], 9, b"abc")
    flipped = bytearray(good)
    flipped[-4] ^= 0x40
    assert raw_error(device, bytes(flipped)) == "CRC"
    assert device.ping() == b"roma"
    assert raw_error(device, P.frame(P.TYPES["PING"], 9, b"x", version=7)) == "VERSION"
    assert device.ping() == b"roma"
    assert raw_error(device, P.frame(0x6B, 9)) == "TYPE"
    assert device.ping() == b"roma"
    oversized = P.SYNC + struct.pack(P.HEADER_FMT, P.VERSION, P.TYPES["PING"], 9, P.MAX_PAYLOAD + 1)
    assert raw_error(device, oversized) == "LENGTH"
    assert device.ping() == b"roma"
    # a frame that stops arriving (bytes lost on the wire): dropped after the frame timeout
    assert raw_error(device, good[:-3]) == "TRUNCATED"
    assert device.ping() == b"roma"
    # garbage between frames is skipped while looking for the next SYNC
    device.link.write_raw(b"\x00\xff\xa5garbage")
    assert device.ping(b"after garbage") == b"after garbage"


def test_bad_requests_are_refused_clearly(device, model):
    def refused(prompt, n=4, params=SamplingParams(), stops=()):
        with pytest.raises(LinkError) as e:
            list(device.generate(prompt, n, params, stops))
        return P.error_name(e.value.code)

    assert refused(list(range(1, CONTEXT + 1))) == "CONTEXT"
    assert refused([1, model.config.vocab]) == "TOKEN_RANGE"
    assert refused([]) == "PAYLOAD"
    short = P.frame(P.TYPES["GENERATE"], 3, b"\x01\x00")
    assert raw_error(device, short) == "PAYLOAD"
    assert [e.token for e in device.generate([1, 57], 3, SamplingParams())] == \
        golden_tokens(model, [1, 57], 3, SamplingParams())


def test_cancel_mid_stream_then_generate_again(device, model):
    prompt = [1, 57, 300]
    seen = []
    for ev in device.generate(prompt, 40, SamplingParams()):
        seen.append(ev.token)
        if len(seen) == 2:
            device.link.send(P.TYPES["INFO"])           # refused as busy, not misread
            device.cancel()
    assert device.last_done.reason == "CANCELLED" and 2 <= len(seen) < 40
    assert seen == golden_tokens(model, prompt, len(seen), SamplingParams())
    stats = device.stats()
    assert stats["cancelled"] >= 1 and stats["busy_rejects"] >= 1
    assert [e.token for e in device.generate(prompt, 5, SamplingParams())] == \
        golden_tokens(model, prompt, 5, SamplingParams())


def test_stats_count_what_happened(device):
    s = device.stats()
    assert s["frames"] > 0 and s["requests"] > 0 and s["tokens"] > 0
    assert s["crc_errors"] >= 1 and s["truncated"] >= 1 and s["bad_frames"] >= 3


@pytest.fixture(scope="module")
def adapter(model, tmp_path_factory):
    """A real PEFT adapter (rank 5) on q and down of every layer (the simulated link moves about 1 KB per
    3 s on this machine, so the adapter is kept small; tests/gateware/test_layer.py covers five targets)."""
    from peft_files import write_adapter
    from roma.host.lora import load_adapter
    path = tmp_path_factory.mktemp("adapter") / "ad"
    write_adapter(path, model, rank=5, b_scale=0.5, targets=("q_proj", "down_proj"))
    return load_adapter(path, model)


def test_adapter_loaded_over_the_link_equals_the_golden_model(device, model, adapter):
    from roma.gateware.accel_build import build_accelerator
    from roma.host.golden.lora import DeviceLora
    from roma.host.targets import adapter_hash, load_adapter
    dev_lora = DeviceLora(adapter)
    info = load_adapter(device, model, dev_lora)
    vm = build_accelerator(model, CFG, CONTEXT).vm
    try:
        assert info["adapter_loaded"] and info["adapter_selected"] and info["adapter_hash"] == adapter_hash(dev_lora)
        # the logits of a forward pass, bit for bit, and the adapter changes them
        list(device.generate([57], 1, SamplingParams()))
        logits = device.read_vm(vm["LOGITS"] * GROUP, model.config.vocab)
        g = GoldenModel(model, context=CONTEXT, lora=dev_lora)
        assert np.array_equal(logits, g.step([57], g.new_state()))
        base = GoldenModel(model, context=CONTEXT)
        assert not np.array_equal(logits, base.step([57], base.new_state()))
        # tokens with the adapter, then the base model again, then the adapter again
        prompt = [1, 57, 300]
        want = list(GoldenTarget(golden_for(model, adapter, CONTEXT)).generate(prompt, 8, SamplingParams(), set()))
        assert [e.token for e in device.generate(prompt, 8, SamplingParams())] == want
        device.select_adapter(False)
        assert [e.token for e in device.generate(prompt, 8, SamplingParams())] == \
            golden_tokens(model, prompt, 8, SamplingParams())
        device.select_adapter(True)
        assert [e.token for e in device.generate(prompt, 4, SamplingParams())] == want[:4]
    finally:
        device.select_adapter(False)


def test_bad_adapter_loads_are_refused_and_the_base_model_still_runs(device, model, adapter):
    from roma.host.golden.lora import DeviceLora
    from roma.host.targets import load_adapter

    def refused(type_, payload):
        with pytest.raises(LinkError) as e:
            device.request(P.TYPES[type_], payload)
        return P.error_name(e.value.code)

    # an adapter for another base model: refused by the host, and by the device (its model hash differs)
    other = tiny_model("tiny-1m")
    with pytest.raises(Exception, match="tiny-260k|tiny-1m"):
        load_adapter(device, other, DeviceLora(adapter))
    begin = struct.pack(P.ADAPTER_BEGIN_FMT, bytes(16), bytes(16), 10, 8)
    assert refused("ADAPTER_BEGIN", begin) == "ADAPTER"
    # data into the KV cache's part of the banks, and a load whose checksum fails
    info = device.info()
    head = info["n_cmds"] - info["layer_cmds"]
    mine = bytes.fromhex(model.content_hash()[:32])
    # a program whose head is not the base program's
    assert refused("ADAPTER_BEGIN", struct.pack(P.ADAPTER_BEGIN_FMT, mine, bytes(16), 8 + head + 1, 8)) == "ADAPTER"
    # a load that ends before its program arrived
    device.request(P.TYPES["ADAPTER_BEGIN"], struct.pack(P.ADAPTER_BEGIN_FMT, mine, bytes(16), 8 + head, 8),
                   expect="ACK")
    assert refused("ADAPTER_END", struct.pack("<I", 0)) == "ADAPTER"
    device.request(P.TYPES["ADAPTER_BEGIN"], struct.pack(P.ADAPTER_BEGIN_FMT, mine, bytes(16), 8 + head, 8),
                   expect="ACK")
    kv = struct.pack(P.ADAPTER_DATA_HEADER, 1, 0, 4, 0) + bytes(4)
    assert refused("ADAPTER_DATA", kv) == "PAYLOAD"
    assert refused("ADAPTER_END", struct.pack("<I", 12345)) == "ADAPTER"
    assert refused("SELECT", b"\x01") == "ADAPTER"            # nothing loaded now
    assert device.info()["adapter_loaded"] == 0
    prompt = [1, 57, 300]
    assert [e.token for e in device.generate(prompt, 5, SamplingParams())] == \
        golden_tokens(model, prompt, 5, SamplingParams())

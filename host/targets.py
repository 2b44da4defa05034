"""Where `roma generate` runs: the golden model in this process (host/generate.py GoldenTarget), the simulated
SoC (a Verilator build of it, started here), or a device at a link URL. The last two speak host/protocol.py
through host/link.py and yield tokens exactly as GoldenTarget does."""

from .errors import RomaError
from .link import Device, LinkError


def adapter_hash(dev_lora):
    """16 bytes (hex) identifying an adapter's device-format weights."""
    import hashlib
    h = hashlib.sha256()
    for key in sorted(dev_lora.paths):
        p = dev_lora.paths[key]
        h.update(repr(key).encode())
        for m in (p.A_dev, p.B_dev):
            h.update(m.codes.tobytes())
            h.update(m.er.tobytes())
    return h.hexdigest()[:32]


def load_adapter(device, model, dev_lora):
    """Load a LoRA adapter (a golden DeviceLora of `model`) into a device and select it: its program
    (gateware/program.py with the adapter's LoraPlan) and its weights in the H-unit's banks. Returns the
    device's INFO after."""
    from roma.gateware.accelerator import CMD_BITS
    from roma.gateware.lora_image import lora_records
    from roma.gateware.program import Geometry, LoraPlan, head_program, packed, token_program
    from roma.host.export import bank_layout, matrix_list
    from roma.host.golden.lora import padded_rank
    from roma.host.golden.weights import to_device
    from roma.soc.config import AccelConfig

    info = device.info()
    if info["model_hash"] != model.content_hash()[:32]:
        raise RomaError(f"the adapter is for {model.config.name}; the device holds {info['model_name']} "
                        f"(weights {info['model_hash'][:12]})")
    cap = info["lora_rank"]
    if cap == 0:
        raise RomaError("the device was built without room for adapters (lora_rank 0)")
    if dev_lora.rank_padded > padded_rank(cap):
        raise RomaError(f"adapter rank {dev_lora.rank} is over the device's capacity (rank up to {cap})")
    cfg = AccelConfig(lanes=info["lanes"], macs_per_lane=info["macs_per_lane"])
    geo = Geometry.of(model.config, cfg.lanes, info["context"])
    table = bank_layout([(n, to_device(q)) for n, q in matrix_list(model)], geo.lanes)[3]
    plan = LoraPlan(geo, dev_lora, model.config)
    cmds = packed(token_program(geo, table, plan))
    layer_cmds = len(cmds) - len(head_program(geo))
    try:
        device.load_adapter(bytes.fromhex(info["model_hash"]), bytes.fromhex(adapter_hash(dev_lora)), cmds,
                            layer_cmds, -(-CMD_BITS // 32), lora_records(plan, cfg), cfg.macs_per_lane)
        device.select_adapter(True)
    except LinkError as e:
        raise RomaError(str(e)) from None
    return device.info()


class DeviceTarget:
    """A running device (a board, or a simulator somebody else started) at a pyserial URL.

    timeout: how long to wait for each frame; "auto" is a minute for a board and no limit at a socket:// URL,
    which is most likely a simulator (`roma sim`), whose forward passes of a large model take tens of seconds
    each while the firmware prefills the prompt in silence (a simulator that exits closes the socket, which
    ends the wait)."""

    def __init__(self, url, model=None, timeout="auto", ready_timeout=60.0, alive=None):
        if timeout == "auto":
            timeout = None if url.startswith("socket://") else 60.0
        self.name = url
        self.device = Device.open(url, timeout=timeout, ready_timeout=ready_timeout, alive=alive)
        self.info = self.device.info()
        if model is not None:
            want = model.content_hash()[:32]
            if self.info["model_hash"] != want:
                raise RomaError(f"the device at {url} holds {self.info['model_name']} "
                                f"(weights {self.info['model_hash'][:12]}), not {model.config.name} ({want[:12]})")
        self.context = self.info["context"]
        self.done = None

    def load_adapter(self, model, dev_lora):
        """Load a LoRA adapter (a golden DeviceLora of `model`) into the device and select it."""
        self.info = load_adapter(self.device, model, dev_lora)

    def generate(self, tokens, max_new_tokens, params, stop_ids):
        if len(tokens) >= self.context:
            raise RomaError(f"prompt of {len(tokens)} tokens does not fit the device's KV cache of "
                            f"{self.context} positions")
        stops = sorted(stop_ids)
        try:
            for ev in self.device.generate(tokens, max_new_tokens, params, stops):
                yield ev.token
        except LinkError as e:
            raise RomaError(str(e)) from None
        finally:
            self.done = self.device.last_done

    def close(self):
        self.device.close()


class SimTarget(DeviceTarget):
    """The SoC in Verilator: built (or found in the cache) for the model and an accelerator configuration,
    started on a free local port, stopped by close().

    The link waits for frames as long as the simulator runs (and fails as soon as it exits): a simulated
    forward pass of a large model takes tens of seconds of wall time, and the firmware says nothing while it
    prefills the prompt, so no fixed timeout fits every model and prompt."""

    def __init__(self, model, cfg, context=None, progress=True):
        from roma.boards.sim import SimRunner, build_sim
        self.build = build_sim(model, cfg, context=context, progress=progress)
        self.runner = SimRunner(self.build).start()
        try:
            DeviceTarget.__init__(self, self.runner.url, model, timeout=None, ready_timeout=600.0,
                                  alive=self.runner.gone)
        except BaseException:
            self.runner.stop()
            raise
        self.name = f"sim ({cfg.lanes} lanes x {cfg.macs_per_lane} MACs)"

    def close(self):
        try:
            DeviceTarget.close(self)
        finally:
            self.runner.stop()

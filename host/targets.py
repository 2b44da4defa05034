"""Where `roma generate` runs: the golden model in this process (host/generate.py GoldenTarget), the simulated
SoC (a Verilator build of it, started here), or a device at a link URL. The last two speak host/protocol.py
through host/link.py and yield tokens exactly as GoldenTarget does."""

from .errors import RomaError
from .link import Device, LinkError


class DeviceTarget:
    """A running device (a board, or a simulator somebody else started) at a pyserial URL."""

    def __init__(self, url, model=None, timeout=60.0):
        self.name = url
        self.device = Device.open(url, timeout=timeout)
        self.info = self.device.info()
        if model is not None:
            want = model.content_hash()[:32]
            if self.info["model_hash"] != want:
                raise RomaError(f"the device at {url} holds {self.info['model_name']} "
                                f"(weights {self.info['model_hash'][:12]}), not {model.config.name} ({want[:12]})")
        self.context = self.info["context"]
        self.done = None

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
    started on a free local port, stopped by close()."""

    def __init__(self, model, cfg, context=None, progress=True):
        from roma.boards.sim import SimRunner, build_sim
        self.build = build_sim(model, cfg, context=context, progress=progress)
        self.runner = SimRunner(self.build).start()
        try:
            DeviceTarget.__init__(self, self.runner.url, model, timeout=600.0)
        except BaseException:
            self.runner.stop()
            raise
        self.name = f"sim ({cfg.lanes} lanes x {cfg.macs_per_lane} MACs)"

    def close(self):
        try:
            DeviceTarget.close(self)
        finally:
            self.runner.stop()

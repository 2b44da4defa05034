"""The link client: one implementation of host/protocol.py for every byte transport, picked by URL through
pyserial's serial_for_url (`/dev/ttyUSB1`, `socket://localhost:PORT` for the simulator, `rfc2217://...`).

    dev = Device.open("socket://127.0.0.1:4321")
    dev.info()                                    # geometry, model hash, capacities
    for ev in dev.generate(prompt_ids, max_new_tokens=32, params=SamplingParams(), stop_ids={2}):
        ...                                       # TokenEvent as each token arrives; .done when finished
"""

import struct
import time
from dataclasses import dataclass

from . import protocol as P
from .errors import RomaError


class LinkError(RomaError):
    """The link or the device reported a problem (a timeout, a device ERROR frame)."""

    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.code = code


@dataclass
class Frame:
    type: int
    seq: int
    payload: bytes


class Link:
    """Frames over a byte stream, with resynchronisation on garbage and CRC checks on every frame.

    timeout: seconds recv() waits for a frame (None: no limit). alive: for a device this process runs (the
    simulator), a callable that returns None while it runs and why it stopped once it has: recv() then fails
    at once instead of waiting out its timeout."""

    def __init__(self, port, timeout=30.0, alive=None):
        self.port = port
        self.timeout = timeout
        self.alive = alive
        self.seq = 0
        self.buf = bytearray()
        self.dropped = 0            # frames from the device that failed their CRC

    @classmethod
    def open(cls, url, timeout=30.0, baudrate=1000000, connect_timeout=10.0, alive=None):
        """A socket:// URL is retried for connect_timeout seconds (a simulator may still be starting)."""
        import serial
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
                return cls(port, timeout, alive)
            except (serial.SerialException, ValueError, OSError) as e:
                gone = alive() if alive else None
                if gone:
                    raise LinkError(gone) from None
                if not url.startswith("socket://") or time.monotonic() > deadline:
                    raise LinkError(f"cannot open {url}: {e}") from None
                time.sleep(0.2)

    def close(self):
        self.port.close()

    def next_seq(self):
        self.seq = (self.seq + 1) & 0xFF or 1
        return self.seq

    def send(self, type_, payload=b"", seq=None):
        seq = self.next_seq() if seq is None else seq
        self.port.write(P.frame(type_, seq, payload))
        self.port.flush()
        return seq

    def write_raw(self, data):
        """Bytes as they are (fault injection in tests)."""
        self.port.write(data)
        self.port.flush()

    def recv(self, timeout=None):
        """The next well-formed frame from the device; garbage before a SYNC and frames with a bad CRC are
        skipped (and counted)."""
        limit = self.timeout if timeout is None else timeout
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            f = self._parse()
            if f is not None:
                return f
            if deadline is not None and time.monotonic() > deadline:
                raise LinkError(f"no answer from the device within {limit} s")
            try:
                chunk = self.port.read(4096)
            except OSError as e:                  # pyserial's SerialException: e.g. the socket was closed
                gone = self.alive() if self.alive is not None else None
                raise LinkError(gone or f"the link to the device broke: {e}") from None
            if chunk:
                self.buf += chunk
            elif self.alive is not None:
                gone = self.alive()
                if gone:
                    raise LinkError(gone)

    def _parse(self):
        while True:
            i = self.buf.find(P.SYNC)
            if i < 0:
                del self.buf[:max(0, len(self.buf) - 1)]
                return None
            del self.buf[:i]
            if len(self.buf) < 2 + P.HEADER_SIZE:
                return None
            version, type_, seq, length = struct.unpack_from(P.HEADER_FMT, self.buf, 2)
            if length > P.MAX_PAYLOAD or version != P.VERSION:
                del self.buf[:1]                     # not a frame start after all
                continue
            total = 2 + P.HEADER_SIZE + length + 2
            if len(self.buf) < total:
                return None
            body = bytes(self.buf[2:total - 2])
            (crc,) = struct.unpack_from("<H", self.buf, total - 2)
            if crc != P.crc16(body):
                self.dropped += 1
                del self.buf[:1]
                continue
            del self.buf[:total]
            return Frame(type_, seq, body[P.HEADER_SIZE:])


def parse_error(payload):
    code, _, detail = struct.unpack_from(P.ERROR_FMT, payload)
    msg = payload[struct.calcsize(P.ERROR_FMT):].decode("ascii", "replace")
    return code, detail, msg


@dataclass
class TokenEvent:
    index: int
    pos: int
    token: int
    cycles: int          # accelerator cycles of the forward pass that produced it
    cpu_cycles: int


@dataclass
class Done:
    reason: str
    n_new: int
    n_prompt: int
    prefill_cycles: int
    decode_cycles: int
    uptime_cycles: int
    counters: dict          # gateware/counters.py's, over the request


class Device:
    """Requests to a ROMA device (or the simulator) over a Link."""

    def __init__(self, link):
        self.link = link
        self.last_done = None

    @classmethod
    def open(cls, url, timeout=30.0, ready_timeout=60.0, alive=None):
        """Connects and waits until the device answers a PING (a simulator drops bytes sent while its SoC is
        still in reset; a board may be booting): each unanswered PING is sent again after a second.
        timeout and alive: see Link."""
        dev = cls(Link.open(url, timeout, alive=alive))
        deadline = time.monotonic() + ready_timeout
        while True:
            seq = dev.link.send(P.TYPES["PING"], b"ready?")
            try:
                while True:
                    f = dev.link.recv(timeout=1.0)
                    if f.type == P.TYPES["ACK"] and f.seq == seq:
                        return dev
            except LinkError:
                gone = alive() if alive else None
                if gone or time.monotonic() > deadline:
                    dev.close()
                    raise LinkError(gone or f"no answer from {url} within {ready_timeout} s") from None

    def close(self):
        self.link.close()

    def request(self, type_, payload=b"", expect=None, retries=1):
        """Send a request and return its answer; a CRC error the device reports is retried."""
        for attempt in range(retries + 1):
            seq = self.link.send(type_, payload)
            while True:
                f = self.link.recv()
                if f.seq != seq and f.type != P.TYPES["ERROR"]:
                    continue                    # a stale answer to an earlier request
                if f.type == P.TYPES["ERROR"]:
                    code, detail, msg = parse_error(f.payload)
                    if f.seq not in (seq, 0):
                        continue
                    if code == P.ERRORS["CRC"] and attempt < retries:
                        break                   # the request was damaged on the way: send it again
                    raise LinkError(f"device: {msg} ({P.error_name(code)}, {detail})", code)
                if expect is not None and f.type != P.TYPES[expect]:
                    raise LinkError(f"device answered {P.type_name(f.type)} to {P.type_name(type_)}")
                return f
        raise LinkError("unreachable")

    def ping(self, data=b"roma"):
        return self.request(P.TYPES["PING"], data, expect="ACK").payload

    def info(self):
        f = self.request(P.TYPES["INFO"], expect="INFO_REPLY")
        d = dict(zip(P.INFO_FIELDS, struct.unpack(P.INFO_FMT, f.payload)))
        d["model_hash"] = d["model_hash"].hex()
        d["model_name"] = d["model_name"].rstrip(b"\0").decode()
        d["adapter_hash"] = d["adapter_hash"].hex() if d["adapter_loaded"] else None
        d.pop("pad")
        d.pop("pad2")
        return d

    def stats(self):
        f = self.request(P.TYPES["STATS"], expect="STATS_REPLY")
        return dict(zip(P.STATS_FIELDS, struct.unpack(P.STATS_FMT, f.payload)))

    def embed(self, token):
        self.request(P.TYPES["EMBED"], struct.pack("<H", token), expect="ACK")

    def run(self, pos, ncmds):
        """The first ncmds commands of the token program at pos; returns (accelerator cycles, the last ARGMAX)."""
        f = self.request(P.TYPES["RUN"], struct.pack("<HH", pos, ncmds), expect="ACK")
        return struct.unpack("<IH", f.payload)

    def read_vm(self, element, count):
        """count vector-format values from element address `element` (word * 32 + element)."""
        import numpy as np
        out = []
        while count > 0:
            n = min(count, P.MAX_READ_VM)
            f = self.request(P.TYPES["READ_VM"], struct.pack(P.READ_VM_FMT, element, n), expect="VM_REPLY")
            out.append(np.frombuffer(f.payload, "<i8"))
            element, count = element + n, count - n
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def load_adapter(self, model_hash, adapter_hash, cmds, layer_cmds, cmd_words, records, macs_per_lane):
        """Load an adapter: its token program (packed command words; the first layer_cmds run the layers) and
        its H-unit bank contents (gateware/lora_image.py records), in frames, checked by a CRC-32 at the end.
        The device refuses an adapter for another base model (ERROR ADAPTER)."""
        import binascii

        import numpy as np
        self.request(P.TYPES["ADAPTER_BEGIN"],
                     struct.pack(P.ADAPTER_BEGIN_FMT, model_hash, adapter_hash, len(cmds), layer_cmds), expect="ACK")
        crc = 0

        def send(type_, body):
            nonlocal crc
            self.request(P.TYPES[type_], body, expect="ACK")
            crc = binascii.crc32(body, crc)

        per = (P.MAX_PAYLOAD - 4) // (4 * cmd_words)
        for i in range(0, len(cmds), per):
            chunk = cmds[i:i + per]
            words = [(w >> (32 * (cmd_words - 1 - k))) & 0xFFFFFFFF for w in chunk for k in range(cmd_words)]
            send("ADAPTER_CMDS", struct.pack(f"<HH{len(words)}I", i, len(chunk), *words))
        hdr = struct.calcsize(P.ADAPTER_DATA_HEADER)
        frame = bytearray()

        def record(kind, bank, adr, vals):
            """Records are packed into frames, each 2-byte aligned; a full frame is sent. vals: the data, or
            for zero words (kind 2) their count."""
            nonlocal frame
            size = (2 * macs_per_lane, 1, 0)[kind]
            n = vals if kind == 2 else len(vals)
            while n:
                room = P.MAX_PAYLOAD - len(frame) - hdr - 1          # (1: the alignment byte)
                k = min(n, 0xFFFF, room // size if size else 0xFFFF) if room >= 0 else 0
                if k < min(n, 8):                                     # not worth a record here: next frame
                    send("ADAPTER_DATA", bytes(frame))
                    frame = bytearray()
                    continue
                frame += struct.pack(P.ADAPTER_DATA_HEADER, kind, bank, k, adr)
                if size:
                    frame += np.asarray(vals[:k], "<i2" if kind == 0 else "i1").tobytes()
                    vals = vals[k:]
                frame += bytes(len(frame) & 1)
                adr, n = adr + k, n - k

        for kind, bank, adr, vals in records:
            if kind == "e":
                record(1, bank, adr, vals)
                continue
            # runs of all-zero words (A's rows and B's columns padded to whole groups) go without data
            zero = ~np.asarray(vals).any(axis=1)
            k = 0
            while k < len(vals):
                j = k
                while j < len(vals) and zero[j] == zero[k]:
                    j += 1
                record(2, bank, adr + k, j - k) if zero[k] else record(0, bank, adr + k, vals[k:j])
                k = j
        if frame:
            send("ADAPTER_DATA", bytes(frame))
        self.request(P.TYPES["ADAPTER_END"], struct.pack("<I", crc), expect="ACK")

    def select_adapter(self, on):
        """Generation (and RUN) use the loaded adapter (on) or the base model."""
        self.request(P.TYPES["SELECT"], bytes([int(bool(on))]), expect="ACK")

    def cancel(self):
        """Ask a running GENERATE to stop (its DONE arrives on the generate() iterator)."""
        self.link.send(P.TYPES["CANCEL"])

    def generate(self, prompt, max_new_tokens, params, stop_ids=()):
        """Yields a TokenEvent per token; the request's Done is in .last_done afterwards."""
        stop_ids = list(stop_ids)
        if len(stop_ids) > P.MAX_STOP:
            raise LinkError(f"{len(stop_ids)} stop tokens: the device takes at most {P.MAX_STOP}")
        payload = struct.pack(P.GENERATE_FMT, max_new_tokens, params.temp_q, params.top_k if params.temp_q else 1, 0,
                              params.top_p_q, params.rng_state(), len(stop_ids), len(prompt))
        payload += struct.pack(f"<{len(stop_ids)}H", *stop_ids) + struct.pack(f"<{len(prompt)}H", *prompt)
        if len(payload) > P.MAX_PAYLOAD:
            raise LinkError(f"a prompt of {len(prompt)} tokens does not fit one frame "
                            f"({P.MAX_PAYLOAD} bytes, about {(P.MAX_PAYLOAD - 40) // 2} tokens)")
        seq = self.link.send(P.TYPES["GENERATE"], payload)
        self.last_done = None
        while True:
            f = self.link.recv()
            if f.type == P.TYPES["ERROR"]:
                code, detail, msg = parse_error(f.payload)
                if code == P.ERRORS["BUSY"] or f.seq not in (seq, 0):
                    continue                    # our own stray request refused mid-generation
                raise LinkError(f"device: {msg} ({P.error_name(code)}, {detail})", code)
            if f.seq != seq:
                continue
            if f.type == P.TYPES["TOKEN"]:
                yield TokenEvent(*[v for k, v in zip(range(6), struct.unpack(P.TOKEN_FMT, f.payload)) if k != 3])
            elif f.type == P.TYPES["DONE"]:
                v = struct.unpack(P.DONE_FMT, f.payload)
                reason = next(k for k, r in P.DONE_REASONS.items() if r == v[0])
                self.last_done = Done(reason, v[2], v[3], *v[5:8], dict(zip(P.COUNTERS, v[8:])))
                return

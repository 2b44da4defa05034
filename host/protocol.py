"""The host <-> device protocol over any byte stream (UART, the simulator's TCP port): the one definition.
The firmware gets these numbers as the generated header roma_protocol.h (firmware/build.py).

Frame:   A5 5A | version u8 | type u8 | seq u8 | length u16 | payload (length bytes) | crc u16
         little-endian; crc = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over version .. payload.
A reply carries the request's seq; token events carry the GENERATE's seq. A frame with a bad CRC, an unknown
version or type, a length over MAX_PAYLOAD, or one that stops arriving for FRAME_TIMEOUT_MS is answered with
an ERROR frame naming what was wrong (seq 0 when the header itself was unreadable); the device then waits for
the next SYNC, so the very next well-formed request succeeds.

Requests and their answers (payload layouts are the struct formats below, fields in order):
  PING      any bytes                  -> ACK echoing them
  INFO                                 -> INFO_REPLY
  GENERATE  GENERATE_FMT + stop ids (u16 each) + prompt ids (u16 each)
                                       -> TOKEN per new token, then DONE (or ERROR before any token)
  CANCEL    (during GENERATE)          -> the GENERATE ends with DONE, reason CANCELLED; when idle: ACK
  STATS                                -> STATS_REPLY
  EMBED     token u16                  -> ACK; the token's embedding row is in the vector memory's X region
  RUN       pos u16, ncmds u16         -> ACK with the accelerator cycles (u32) and the last ARGMAX (u16):
                                          the first ncmds commands of
                                          the token program at pos (per-layer checks; EMBED first)
  READ_VM   READ_VM_FMT                -> VM_REPLY: that many vector-format values (int64 each) from an element
                                          address (word * 32 + element); for tests and debugging
  ADAPTER_BEGIN  ADAPTER_BEGIN_FMT     -> ACK, or ERROR ADAPTER (another base model, a program over capacity);
                                          unselects and forgets any loaded adapter
  ADAPTER_CMDS   index u16, count u16, count commands (CMD words u32 each, most significant first)  -> ACK
  ADAPTER_DATA   records, each 2-byte aligned: kind u8 (0 weights, 1 row exponents, 2 zero weights), bank u8,
                 n u16, address u32, then n words of MACS int16 (weights), n int8 (exponents) or nothing
                 (zeros); only past the KV cache's part of the banks  -> ACK
  ADAPTER_END    crc32 u32 (zlib's, over every CMDS and DATA payload in order)  -> ACK, or ERROR ADAPTER
  SELECT         u8: 0 the base model, 1 the loaded adapter  -> ACK (generation and RUN use it)
"""

import binascii
import struct

from roma.gateware.counters import COUNTERS

SYNC = b"\xa5\x5a"
VERSION = 1
HEADER_FMT = "<BBBH"            # version, type, seq, length
HEADER_SIZE = struct.calcsize(HEADER_FMT)
MAX_PAYLOAD = 1024            # the simulator's TCP bridge buffers 2 KB
FRAME_TIMEOUT_MS = 200

# frame types: requests below 0x80, answers and events from 0x80
TYPES = {
    "PING": 0x01, "INFO": 0x02, "GENERATE": 0x03, "CANCEL": 0x04, "STATS": 0x05, "EMBED": 0x06, "READ_VM": 0x07, "RUN": 0x08,
    "ADAPTER_BEGIN": 0x09, "ADAPTER_CMDS": 0x0A, "ADAPTER_DATA": 0x0B, "ADAPTER_END": 0x0C, "SELECT": 0x0D,
    "ACK": 0x80, "INFO_REPLY": 0x81, "TOKEN": 0x82, "DONE": 0x83, "STATS_REPLY": 0x84, "VM_REPLY": 0x85,
    "ERROR": 0xEE,
}
ERRORS = {
    "CRC": 1,               # the frame's CRC did not match
    "VERSION": 2,           # another protocol version
    "TYPE": 3,              # an unknown frame type
    "LENGTH": 4,            # longer than MAX_PAYLOAD
    "TRUNCATED": 5,         # the frame stopped arriving
    "PAYLOAD": 6,           # a payload of the wrong size or with a field out of range
    "CONTEXT": 7,           # the prompt does not fit the KV cache
    "BUSY": 8,              # a request other than CANCEL during a GENERATE
    "TOKEN_RANGE": 9,       # a token id outside the vocabulary
    "ADAPTER": 10,          # an adapter for another base, over capacity, failing its checksum, or none loaded
}
DONE_REASONS = {"MAX_TOKENS": 0, "STOP": 1, "CANCELLED": 2, "CONTEXT": 3}

GENERATE_FMT = "<HHHHIIHH"      # max_new, temp_q, top_k, flags, top_p_q, seed, n_stop, n_prompt
MAX_STOP = 8
TOKEN_FMT = "<HHHHII"           # index, pos, token, pad, accel cycles of its forward pass, cpu cycles of its step
# reason, pad, n_new, n_prompt, pad, prefill accel cycles, decode accel cycles, uptime cycles, then each of
# the accelerator's counters over the request (gateware/counters.py)
DONE_FMT = "<BBHHHIII" + "I" * len(COUNTERS)
INFO_FMT = "<HHHHHHHHHHHHBBBBIIII16s32s16sBBBBI"
INFO_FIELDS = ("protocol", "firmware", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden", "vocab",
               "context", "lanes", "macs_per_lane", "code_bits", "head_bits", "head_signed", "pad", "n_cmds",
               "layer_cmds", "sys_clk", "max_payload", "model_hash", "model_name", "adapter_hash", "adapter_loaded",
               "adapter_selected", "lora_rank", "pad2", "max_cmds")
ADAPTER_BEGIN_FMT = "<16s16sHH"  # model hash, adapter hash, commands of its token program, of which layers'
ADAPTER_DATA_HEADER = "<BBHI"     # kind, bank, n, address
READ_VM_FMT = "<IH"              # element address, count
MAX_READ_VM = MAX_PAYLOAD // 8
STATS_FMT = "<IIIIIIII"
STATS_FIELDS = ("frames", "crc_errors", "truncated", "bad_frames", "requests", "tokens", "cancelled", "busy_rejects")
ERROR_FMT = "<BBH"              # code, pad, detail; then an ASCII message


def crc16(data):
    return binascii.crc_hqx(data, 0xFFFF)


def frame(type_, seq, payload=b"", version=VERSION):
    body = struct.pack(HEADER_FMT, version, type_, seq & 0xFF, len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


def type_name(t):
    return next((k for k, v in TYPES.items() if v == t), f"0x{t:02x}")


def error_name(code):
    return next((k for k, v in ERRORS.items() if v == code), str(code))


def c_header():
    """roma_protocol.h: every number above, for the firmware."""
    lines = ["/* Generated from host/protocol.py: do not edit. */", "#pragma once", ""]
    lines.append(f"#define PROTO_SYNC0 0x{SYNC[0]:02x}")
    lines.append(f"#define PROTO_SYNC1 0x{SYNC[1]:02x}")
    for k, v in (("VERSION", VERSION), ("HEADER_SIZE", HEADER_SIZE), ("MAX_PAYLOAD", MAX_PAYLOAD),
                 ("FRAME_TIMEOUT_MS", FRAME_TIMEOUT_MS), ("MAX_STOP", MAX_STOP),
                 ("MAX_READ_VM", MAX_READ_VM), ("READ_VM_SIZE", struct.calcsize(READ_VM_FMT)),
                 ("GENERATE_SIZE", struct.calcsize(GENERATE_FMT)), ("TOKEN_SIZE", struct.calcsize(TOKEN_FMT)),
                 ("DONE_SIZE", struct.calcsize(DONE_FMT)), ("INFO_SIZE", struct.calcsize(INFO_FMT)),
                 ("STATS_SIZE", struct.calcsize(STATS_FMT)), ("ERROR_SIZE", struct.calcsize(ERROR_FMT)),
                 ("ADAPTER_BEGIN_SIZE", struct.calcsize(ADAPTER_BEGIN_FMT))):
        lines.append(f"#define PROTO_{k} {v}")
    lines += [f"#define T_{k} 0x{v:02x}" for k, v in TYPES.items()]
    lines += [f"#define ERR_{k} {v}" for k, v in ERRORS.items()]
    lines += [f"#define DONE_{k} {v}" for k, v in DONE_REASONS.items()]
    return "\n".join(lines) + "\n"

"""Reading .safetensors files as float32 numpy arrays, bfloat16 included.

safetensors' numpy backend cannot represent bfloat16 (numpy has no such dtype), and bf16 is how most
checkpoints and adapters are published, so the format is read directly: an 8-byte little-endian header
length, a JSON header giving each tensor's dtype, shape and byte offsets into the data section that follows,
then the raw little-endian data.
"""

import json
import math
import struct

import numpy as np

from .errors import RomaError

DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}


class SafetensorsFiles:
    """Tensor name -> file over one or several (sharded) files; tensors are read on demand."""

    def __init__(self, files, what="tensors"):
        self.what = what
        self.where, self.header, self.data_start = {}, {}, {}
        for f in files:
            try:
                with open(f, "rb") as fh:
                    (n,) = struct.unpack("<Q", fh.read(8))
                    size = fh.seek(0, 2)
                    if n > size - 8:
                        raise ValueError("header longer than the file")
                    fh.seek(8)
                    header = json.loads(fh.read(n))
                if not isinstance(header, dict):
                    raise ValueError("header is not a JSON object")
            except (OSError, struct.error, ValueError, UnicodeDecodeError) as e:
                raise RomaError(f"{f}: not a readable safetensors file ({type(e).__name__}: {e})")
            self.data_start[f] = 8 + n
            body = size - 8 - n
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                try:
                    dtype, shape, (begin, end) = (info["dtype"], tuple(int(s) for s in info["shape"]),
                                                  info["data_offsets"])
                except (KeyError, TypeError, ValueError):
                    raise RomaError(f"{f}: not a readable safetensors file (entry {name})")
                if dtype in DTYPES and not (0 <= begin <= end <= body
                                            and end - begin == math.prod(shape) * DTYPES[dtype].itemsize):
                    raise RomaError(f"{f}: not a readable safetensors file (tensor {name} has inconsistent offsets)")
                self.where[name] = f
                self.header[name] = (dtype, shape, (begin, end))

    def __contains__(self, name):
        return name in self.where

    def names(self):
        return list(self.where)

    def shape(self, name):
        return self.header[name][1]

    def get(self, name):
        f = self.where[name]
        dtype, shape, (begin, end) = self.header[name]
        if dtype not in DTYPES:
            raise RomaError(f"{f}: tensor {name} has dtype {dtype}; {self.what} must be float32, float16 or "
                            f"bfloat16")
        dt = DTYPES[dtype]
        a = np.fromfile(f, dtype=dt, count=math.prod(shape), offset=self.data_start[f] + begin).reshape(shape)
        if dtype == "BF16":
            # bfloat16 is the top half of a float32: shifting its 16 bits up gives the exact float32 value
            a = (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float32)

    def read_all(self):
        return {name: self.get(name) for name in self.where}

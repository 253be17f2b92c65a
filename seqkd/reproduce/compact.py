"""Half-size, bit-exact storage of float32 weights whose values are all float16 values.

A student trained with `TrainConfig.round_to = "float16"` saves float32 safetensors whose every trainable weight
is a float16 value (`training.precision.rounded`). Its file then holds the same information in half the bytes:
`pack` stores each such float32 tensor as float16, in a plain safetensors file that keeps the original header in
its metadata (`seqkd.float32_header`); `unpack` rebuilds the original file byte for byte. `pack` checks that
before it answers, and answers None (store the file as it is) when nothing shrinks or the bytes would differ.

safetensors layout: 8 bytes (little-endian header length n), n bytes of JSON header {name: {dtype, shape,
data_offsets [begin, end)}, "__metadata__": {...}}, then the tensors' bytes, contiguous.
"""

from __future__ import annotations

import json
import struct

import numpy as np
from safetensors.numpy import save

KEY = "seqkd.float32_header"


def _split(data: bytes) -> tuple[bytes, dict, memoryview]:
    """(header bytes, parsed header, data buffer) of safetensors file `data`."""
    (n,) = struct.unpack("<Q", data[:8])
    header = bytes(data[8 : 8 + n])
    return header, json.loads(header), memoryview(data)[8 + n :]


def pack(data: bytes) -> bytes | None:
    """`data` (a safetensors file) with its float16-exact float32 tensors stored as float16; None when that
    saves less than a tenth, the file is not safetensors, or the packed file would not unpack to `data` exactly."""
    try:
        header, meta, buf = _split(data)
    except (struct.error, ValueError, UnicodeDecodeError):
        return None
    tensors, shrunk = {}, False
    for name, t in meta.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = np.frombuffer(buf[a:b], dtype=np.uint8)
        if t["dtype"] == "F32" and raw.size:
            x = raw.view("<f4")
            h = x.astype("<f2")
            if np.array_equal(h.astype("<f4").view("<u4"), x.view("<u4")):
                tensors[name], shrunk = h, True
                continue
        tensors[name] = raw.copy()  # any other tensor: its bytes as they are
    if not shrunk:
        return None
    packed = save(tensors, metadata={KEY: header.decode("utf-8")})
    if len(packed) > 0.9 * len(data):  # a few exact tensors (a zero bias) in trained float32 weights: not worth it
        return None
    return packed if unpack(packed) == data else None


def unpack(packed: bytes) -> bytes:
    """The original safetensors file of a `pack` result."""
    _, meta, buf = _split(packed)
    header = meta["__metadata__"][KEY].encode("utf-8")
    original = json.loads(header)
    out = bytearray(max((t["data_offsets"][1] for n, t in original.items() if n != "__metadata__"), default=0))
    for name, t in original.items():
        if name == "__metadata__":
            continue
        a, b = meta[name]["data_offsets"]
        raw = np.frombuffer(buf[a:b], dtype=np.uint8)
        if meta[name]["dtype"] == "F16":
            raw = raw.view("<f2").astype("<f4").view(np.uint8)
        lo, hi = t["data_offsets"]
        out[lo:hi] = raw.tobytes()
    return struct.pack("<Q", len(header)) + header + bytes(out)

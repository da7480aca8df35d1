"""Minimal safetensors read/write with numpy (an independent reference for tests; no torch).
F32, F16, BF16 (as float32 values rounded to nearest even bf16), I32, I64, U8, I8."""
import json
import struct

import numpy as np

_NP = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64,
       "U8": np.uint8, "I8": np.int8, "U16": np.uint16}


def bf16_bits(x):
    """float32 array -> uint16 bf16 bits, round to nearest even."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)


def read(path):
    """-> (dict name -> float64/int array, metadata dict, dtypes dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    hdr = json.loads(data[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    out, dtypes = {}, {}
    base = 8 + n
    for name, e in hdr.items():
        b, end = e["data_offsets"]
        raw = data[base + b: base + end]
        if e["dtype"] == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, _NP[e["dtype"]])
        out[name] = a.reshape(e["shape"]).astype(np.float64) if e["dtype"] in ("F32", "F16", "BF16") \
            else a.reshape(e["shape"])
        dtypes[name] = e["dtype"]
    return out, meta, dtypes


def write(path, tensors, dtype="F32"):
    """tensors: dict name -> array (written in `dtype` for floats, native for ints)."""
    hdr, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.asarray(a)
        if a.dtype.kind == "f":
            dt = dtype
            if dt == "BF16":
                raw = bf16_bits(a.astype(np.float32)).tobytes()
            else:
                raw = a.astype(_NP[dt]).tobytes()
        else:
            dt = {np.dtype(np.int32): "I32", np.dtype(np.int64): "I64"}[a.dtype]
            raw = a.tobytes()
        hdr[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

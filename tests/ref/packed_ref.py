"""Independent numpy reader of qat's packed safetensors (host/quant/packed_layout.h), written
from the layout's description only: row n of <base>.qcodes is a little-endian bit stream with
code k at bits [b*k, b*k + b); <base>.qzeros packs the zero points along the groups the same way;
w[n, k] = (code - zp) * s in float32, zp = z (asym) or 2^(b-1) (sym).

    python3 packed_ref.py PACKED.safetensors FAKEQUANT.safetensors exact|f16
compares every packed Linear with the fake-quant folder's weight of the same name: exact (F32
scales: bit for bit) or f16 (|diff| <= 2^-11 * s * (2^b - 1) per element: the F16 rounding of s,
at most half an F16 ulp relative, times the largest |code - zp|). Prints one line per tensor and
the total bits per weight; exits 1 on any mismatch."""
import json
import sys

import numpy as np

import st_np


def stream(a, nbits, count):
    """[R, bytes] uint8 -> [R, count] codes of nbits each, LSB first."""
    bits = np.unpackbits(a, axis=1, bitorder="little")[:, : count * nbits]
    bits = bits.reshape(a.shape[0], count, nbits).astype(np.int64)
    return (bits << np.arange(nbits)).sum(axis=2)


def unpack(t, meta, base):
    m = json.loads(meta["qat_packed"])
    b, sym = m["bits"], m["sym"]
    assert m["version"] == 1 and m["layout"] == "lsb-stream-u32", m
    K = int(meta[base + ".in_features"])
    s = t[base + ".qscales"].astype(np.float32)
    N, G = s.shape
    g = K // G
    q = stream(t[base + ".qcodes"], b, K)
    zp = np.full((N, G), 1 << (b - 1)) if sym else stream(t[base + ".qzeros"], b, G)
    w = (q.astype(np.float32) - np.repeat(zp, g, axis=1).astype(np.float32)) * np.repeat(s, g, axis=1)
    return w.astype(np.float32), b, s, g, q.shape


def main():
    packed, fq, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    t, meta, _ = st_np.read(packed)
    f, _, _ = st_np.read(fq)
    bad, nw, nbytes = 0, 0, 0
    for name in sorted(t):
        if not name.endswith(".qcodes"):
            continue
        base = name[: -len(".qcodes")]
        w, b, s, g, shape = unpack(t, meta, base)
        ref = f[base + ".weight"].astype(np.float32)
        if mode == "exact":
            ok = w.shape == ref.shape and np.array_equal(w.view(np.uint32), ref.view(np.uint32))
        else:
            tol = np.repeat(s, g, axis=1) * (2.0 ** -11) * ((1 << b) - 1)
            ok = w.shape == ref.shape and bool(np.all(np.abs(w - ref) <= tol))
        print(f"{base}: {'ok' if ok else 'MISMATCH'} max|diff| {np.abs(w - ref).max():.3g}")
        bad += not ok
        nw += w.size
        sbytes = 2 if meta_f16(meta) else 4  # st_np returns every float tensor as float64
        nbytes += t[base + ".qcodes"].size + s.size * sbytes
        if base + ".qzeros" in t:
            nbytes += t[base + ".qzeros"].size
    print(f"bits per weight {8.0 * nbytes / nw:.3f}")
    sys.exit(1 if bad else 0)


def meta_f16(meta):
    return json.loads(meta["qat_packed"])["scale_dtype"] == "F16"


if __name__ == "__main__":
    main()

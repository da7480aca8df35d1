"""RTN fake-quant reference (REFERENCE.md section 1) in float64 numpy, written from the formulas.
Round half to even (np.rint). group > 0: groups of `group` columns, trailing partial group
allowed; -1: per-channel; 0: per-tensor."""
import numpy as np


def _groups(cols, group):
    if group > 0:
        return [(a, min(a + group, cols)) for a in range(0, cols, group)]
    return [(0, cols)]


def fake_quant(w, bits, group, sym):
    w = np.asarray(w, dtype=np.float32)
    out = np.empty_like(w, dtype=np.float64)
    rows, cols = w.shape
    blocks = [(slice(None), slice(0, cols))] if group == 0 else \
        [(slice(r, r + 1), slice(a, b)) for r in range(rows) for a, b in _groups(cols, group)]
    for rs, cs in blocks:
        x = w[rs, cs].astype(np.float32)
        if sym:
            qp, qn = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
            s = np.float32(np.clip(np.float32(np.abs(x).max()) / np.float32(qp), 1e-4, 1e4))
            q = np.clip(np.rint(x / s), qn, qp)
            out[rs, cs] = q * s
        else:
            qmax = 2 ** bits - 1
            mn, mx = np.float32(x.min()), np.float32(x.max())
            s = np.float32(np.clip((mx - mn) / np.float32(qmax), 1e-4, 1e4))
            z = np.float32(np.rint(-np.clip(mn / s, -1e4, 1e4)))
            zt = np.clip(np.rint(z), 0, qmax)
            q = np.clip(np.rint(x / s) + zt, 0, qmax)
            out[rs, cs] = (q - zt) * s
    return out

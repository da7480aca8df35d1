"""RTN fake-quant reference (REFERENCE.md section 1) in numpy, written from the formulas.
Round half to even (np.rint). group > 0: groups of `group` columns, trailing partial group
allowed; -1: per-channel; 0: per-tensor.

init="mse" is GPTQ's clipping search (backend.h qat_qinit): per group, candidates i = 0..79 with
p = float32(1 - i/100); (s, z) = the float32 min-max formula on (p * min, p * max) (sym:
p * max|w|); error = sum |w_hat - w|^2.4 in float64 with w_hat the float32 forward; the first
smallest error wins (candidate 0 is min-max)."""
import numpy as np

MSE_GRID, MSE_STEPS, MSE_NORM = 100, 80, 2.4


def _groups(cols, group):
    if group > 0:
        return [(a, min(a + group, cols)) for a in range(0, cols, group)]
    return [(0, cols)]


def blocks(shape, group):
    """(row slice, column slice) of every quantizer group, in s/z order."""
    rows, cols = shape
    if group == 0:
        return [(slice(None), slice(0, cols))]
    return [(slice(r, r + 1), slice(a, b)) for r in range(rows) for a, b in _groups(cols, group)]


def minmax_sz(mn, mx, bits, sym):
    """s, z (float32) of the min-max init of a range [mn, mx] (float32), as REFERENCE.md."""
    mn, mx = np.float32(mn), np.float32(mx)
    if sym:
        qp = 2 ** (bits - 1) - 1
        amax = max(abs(mn), abs(mx))
        return np.float32(np.clip(np.float32(amax) / np.float32(qp), 1e-4, 1e4)), np.float32(0)
    qmax = 2 ** bits - 1
    s = np.float32(np.clip(np.float32(mx - mn) / np.float32(qmax), 1e-4, 1e4))
    z = np.float32(np.rint(-np.clip(np.float32(mn / s), -1e4, 1e4)))
    return s, z + np.float32(0)


def forward(x, s, z, bits, sym):
    """float32 fake-quant of x (float32 array) with scalar s, z; returned as float64."""
    x = np.asarray(x, dtype=np.float32)
    s = np.float32(np.clip(s, 1e-4, 1e4))
    if sym:
        qp, qn = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
        q = np.clip(np.rint(x / s), qn, qp).astype(np.float32)
        return (q * s).astype(np.float64)
    qmax = 2 ** bits - 1
    zt = np.float32(np.clip(np.rint(z), 0, qmax))
    q = np.clip(np.rint(x / s) + zt, 0, qmax).astype(np.float32)
    return ((q - zt) * s).astype(np.float64)


def group_err(x, w_hat):
    """sum |w_hat - x|^2.4 in float64."""
    return float(np.sum(np.abs(np.asarray(w_hat, np.float64) - np.asarray(x, np.float64)) ** MSE_NORM))


def init_sz(x, bits, sym, init="minmax"):
    """-> (s, z, index of the chosen candidate, its error) for one group x (float32)."""
    x = np.asarray(x, dtype=np.float32)
    mn, mx = np.float32(x.min()), np.float32(x.max())
    steps = MSE_STEPS if init == "mse" else 1
    best = None
    for i in range(steps):
        p = np.float32(1.0 - i / MSE_GRID)
        s, z = minmax_sz(np.float32(p * mn), np.float32(p * mx), bits, sym)
        e = group_err(x, forward(x, s, z, bits, sym))
        if best is None or e < best[3]:
            best = (s, z, i, e)
    return best


def fake_quant(w, bits, group, sym, init="minmax"):
    w = np.asarray(w, dtype=np.float32)
    out = np.empty_like(w, dtype=np.float64)
    for rs, cs in blocks(w.shape, group):
        x = w[rs, cs]
        s, z, _, _ = init_sz(x, bits, sym, init)
        out[rs, cs] = forward(x, s, z, bits, sym)
    return out

"""Independent numpy reader of a GPTQ gptq_v2 checkpoint, written from REFERENCE.md section 10
only (not from qat's code): qweight int32 [K*b/32, N] with codes LSB first along K (b = 3: each
32 codes are one little-endian 96-bit stream over 3 words), qzeros int32 [G, N*b/32] packed the
same way along N with z stored as is, scales F16 [G, N], g_idx int32 [K]; w = s * (q - z).

    python3 gptq_pack_ref.py GPTQ_DIR PACKED_DIR FAKEQUANT_DIR
checks config.json's quantization_config, every Linear's shapes and dtypes, g_idx = k / g, and
that the weights equal (a) bit for bit the packed folder's as tests/ref/packed_ref.py reads them
when its scales are F16 (two layouts, two readers), and (b) the fake-quant folder's within the
F16 rounding of the scales (2^-11 s (2^b - 1)), exactly when the packed scales were F16 already
and the fake-quant is of those; also that every other tensor is unchanged. Exit 1 on a mismatch."""
import json
import os
import sys

import numpy as np

import packed_ref
import st_np


def unpack_along0(words, b, count):
    """int32 [W, C] -> codes [count, C], codes along axis 0, LSB first."""
    u = words.astype(np.int64) & 0xFFFFFFFF
    if b == 3:
        out = np.zeros((count, u.shape[1]), np.int64)
        for blk in range(u.shape[0] // 3):
            for c in range(u.shape[1]):
                v = int(u[3 * blk, c]) | int(u[3 * blk + 1, c]) << 32 | int(u[3 * blk + 2, c]) << 64
                for j in range(32):
                    out[blk * 32 + j, c] = (v >> (3 * j)) & 7
        return out
    per = 32 // b
    out = np.zeros((u.shape[0] * per, u.shape[1]), np.int64)
    for i in range(per):
        out[i::per] = (u >> (b * i)) & ((1 << b) - 1)
    return out[:count]


def main():
    gdir, pdir, fdir = sys.argv[1:4]
    cfg = json.load(open(os.path.join(gdir, "config.json")))["quantization_config"]
    assert cfg["quant_method"] == "gptq" and cfg["checkpoint_format"] == "gptq_v2", cfg
    assert cfg["desc_act"] is False, cfg
    b, gs, sym = cfg["bits"], cfg["group_size"], cfg["sym"]
    g, gmeta, gdt = st_np.read(os.path.join(gdir, "model.safetensors"))
    p, pmeta, _ = st_np.read(os.path.join(pdir, "model.safetensors"))
    f, _, _ = st_np.read(os.path.join(fdir, "model.safetensors"))
    pm = json.loads(pmeta["qat_packed"])
    assert pm["bits"] == b and pm["group"] == gs and pm["sym"] == sym, (pm, cfg)
    bad = n = 0
    for name in sorted(g):
        if not name.endswith(".qweight"):
            continue
        base = name[: -len(".qweight")]
        qw, qz, s, gi = g[name], g[base + ".qzeros"], g[base + ".scales"], g[base + ".g_idx"]
        assert gdt[name] == "I32" and gdt[base + ".qzeros"] == "I32" and gdt[base + ".g_idx"] == "I32"
        assert gdt[base + ".scales"] == "F16"
        G, N = s.shape
        K = qw.shape[0] * 32 // b
        assert qz.shape == (G, N * b // 32), qz.shape
        grp = K if gs == -1 else gs
        assert np.array_equal(gi, np.arange(K) // grp), "g_idx"
        q = unpack_along0(qw, b, K)                      # [K, N]
        z = unpack_along0(qz.T.copy(), b, N).T           # [G, N]
        if sym:
            assert np.all(z == 1 << (b - 1)), "sym zero points"
        w = ((q - z[gi]).astype(np.float32) * s[gi].astype(np.float32)).T  # [N, K]
        pw, _, ps, pg, _ = packed_ref.unpack(p, pmeta, base)
        ok = True
        if pm["scale_dtype"] == "F16":
            ok &= np.array_equal(w.view(np.uint32), pw.view(np.uint32))
        ref = f[base + ".weight"].astype(np.float32)
        tol = np.repeat(ps, pg, axis=1) * 2.0 ** -11 * ((1 << b) - 1)
        ok &= w.shape == ref.shape and bool(np.all(np.abs(w - ref) <= tol))
        print(f"{base}: {'ok' if ok else 'MISMATCH'} max|w - fakequant| {np.abs(w - ref).max():.3g}")
        bad += not ok
        n += 1
    for name in f:
        if not name.endswith("_proj.weight"):
            assert np.array_equal(f[name], g[name]), name
    assert n > 0
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

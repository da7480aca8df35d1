"""Check of a `qat export --format gptq` folder against the fake-quant folder of the same
weights (`qat export --format fakequant` of the same run), with the independent GPTQ reader of
gptq_pack_ref.py (written from REFERENCE.md section 10, not from qat's code):

    python3 gptq_export_check.py GPTQ_DIR FAKEQUANT_DIR EXPORT_LOG [--exact]

- every decoder Linear: w = s * (q - z) from qweight / qzeros / scales (F16) / g_idx in float32,
  compared with the fake-quant folder's weight; the largest |difference| must equal the "max
  weight change" the export printed for that tensor (to its 3 printed digits, 0 exactly);
  with --exact every weight must be bit-identical (scales on the F16 grid);
- every other tensor bit-identical to the fake-quant folder's; no Linear left as a .weight.
Prints one line per tensor kind and a summary with the largest difference; exits 1 on a failure."""
import json
import os
import re
import sys

import numpy as np

import st_np
from gptq_pack_ref import unpack_along0


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def main():
    gdir, fdir, log = sys.argv[1:4]
    exact = "--exact" in sys.argv[4:]
    cfg = json.load(open(os.path.join(gdir, "config.json")))["quantization_config"]
    if cfg.get("quant_method") != "gptq" or cfg.get("checkpoint_format") != "gptq_v2":
        fail(f"quantization_config {cfg}")
    b, gs = cfg["bits"], cfg["group_size"]
    reported = {}
    for line in open(log):
        m = re.match(r"^\s+(\S+)\s+\[.*\]\s+gptq W\d+ max weight change (\S+)", line)
        if m:
            reported[m[1]] = float(m[2])
    g, _, gdt = st_np.read(os.path.join(gdir, "model.safetensors"))
    f, _, _ = st_np.read(os.path.join(fdir, "model.safetensors"))
    worst, nlin, nother = 0.0, 0, 0
    for name in sorted(f):
        ref = f[name]
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if base and base + ".qweight" in g:
            if name in g:
                fail(f"{name} is both a weight and a qweight")
            qw, qz, s, gi = g[base + ".qweight"], g[base + ".qzeros"], g[base + ".scales"], g[base + ".g_idx"]
            if gdt[base + ".scales"] != "F16":
                fail(f"{base}.scales is {gdt[base + '.scales']}")
            G, N = s.shape
            K = qw.shape[0] * 32 // b
            grp = K if gs == -1 else gs
            if not np.array_equal(gi, np.arange(K) // grp):
                fail(f"{base}: g_idx")
            q = unpack_along0(qw, b, K)             # [K, N]
            z = unpack_along0(qz.T.copy(), b, N).T  # [G, N]
            w = ((q - z[gi]).astype(np.float32) * s[gi].astype(np.float32)).T  # [N, K]
            r32 = ref.astype(np.float32)
            if w.shape != r32.shape:
                fail(f"{base}: shape {w.shape}, fake-quant {r32.shape}")
            diff = float(np.max(np.abs(w.astype(np.float64) - r32.astype(np.float64))))
            if base not in reported:
                fail(f"{base}: no 'max weight change' line in {log}")
            rv = reported[base]
            if abs(diff - rv) > 5e-3 * rv or (rv == 0 and diff != 0):
                fail(f"{base}: max |gptq - fake-quant| {diff:.6g}, the export reported {rv:.3g}")
            if exact and not np.array_equal(w.view(np.uint32), r32.view(np.uint32)):
                fail(f"{base}: not bit-identical (max |diff| {diff:.3g})")
            worst = max(worst, diff)
            nlin += 1
        else:
            if name not in g:
                fail(f"{name}: missing from the gptq folder")
            if g[name].dtype != ref.dtype or not np.array_equal(g[name].view(np.uint8), ref.view(np.uint8)):
                fail(f"{name}: differs from the fake-quant folder's")
            nother += 1
    if nlin == 0:
        fail("no quantized Linear")
    print(f"gptq: ok ({nlin} Linears W{b} g{gs}, {nother} other tensors identical; max |gptq - "
          f"fake-quant| {worst:.3g}{' (bit-identical)' if exact else ''})")


if __name__ == "__main__":
    main()

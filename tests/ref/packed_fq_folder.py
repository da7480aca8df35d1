"""The fake-quant folder of a packed folder's codes, by the independent numpy reader
(packed_ref.unpack: w = (code - zp) * s in float32, exact for F32 and F16 scales):

    python3 packed_fq_folder.py PACKED_DIR OUT_DIR

writes OUT_DIR/model.safetensors (every <base>.qcodes/.qscales/.qzeros replaced by an F32
<base>.weight, the other tensors copied as F32) and copies config.json and the tokenizer files.
`qat eval` / `qat generate` of OUT_DIR are the reference for the packed folder's."""
import os
import shutil
import sys

import numpy as np

import packed_ref
import st_np


def main():
    src, out = sys.argv[1], sys.argv[2]
    t, meta, _ = st_np.read(os.path.join(src, "model.safetensors"))
    res = {}
    for name in t:
        if name.endswith(".qscales") or name.endswith(".qzeros"):
            continue
        if name.endswith(".qcodes"):
            base = name[: -len(".qcodes")]
            w = packed_ref.unpack(t, meta, base)[0]
            res[base + ".weight"] = w
        else:
            res[name] = np.asarray(t[name], dtype=np.float32)
    os.makedirs(out, exist_ok=True)
    st_np.write(os.path.join(out, "model.safetensors"), res, "F32")
    for f in os.listdir(src):
        if f != "model.safetensors" and not f.startswith("qat_quant") and \
                os.path.isfile(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(out, f))
    print(f"{out}: {sum(n.endswith('.weight') and n.replace('.weight', '.qcodes') in t for n in res)}"
          " Linears dequantized")


if __name__ == "__main__":
    main()

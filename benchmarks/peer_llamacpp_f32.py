#!/usr/bin/env python3
"""An F32 GGUF from a quantized one, for the llama.cpp peer (benchmarks/peer_llamacpp.sh).

Every metadata key is copied as is (general.file_type is set to ALL_F32), every tensor is
dequantized with gguf.quants.dequantize and written as F32 in the same order and with the same
name. The q/k row layout stays llama.cpp's own (this file is for llama.cpp, not for qat).

usage: peer_llamacpp_f32.py IN.gguf OUT.gguf
"""
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def field_value(f):
    """The Python value of a reader field (scalars, strings, arrays of either)."""
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        et = f.types[1]
        if et == GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8", errors="surrogateescape") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if t == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8", errors="surrogateescape")
    return f.parts[f.data[0]].tolist()[0]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    src, dst = sys.argv[1], sys.argv[2]
    r = GGUFReader(src)
    arch = field_value(r.fields["general.architecture"])
    w = GGUFWriter(dst, arch)
    skip = {"general.architecture", "GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    for name, f in r.fields.items():
        if name in skip or name.startswith("GGUF."):
            continue
        if name == "general.file_type":
            w.add_uint32(name, int(gguf.LlamaFileType.ALL_F32))
            continue
        t = f.types[0]
        v = field_value(f)
        if t == GGUFValueType.ARRAY:
            w.add_array(name, v)  # element type inferred: str, int -> INT32, float -> FLOAT32
        else:
            w.add_key_value(name, v, t)
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        # the reader's shape is numpy order (rows last-dim fastest), as the writer expects
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        w.add_tensor(t.name, a.reshape(shape), raw_dtype=gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()

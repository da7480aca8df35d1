/* Inference on packed low-bit weights (issue 11): a folder `qat quantize --packed` wrote
 * (quant/packed.h: per decoder Linear "<base>.qcodes / .qscales / .qzeros" and "<base>.in_features"
 * metadata, the file's "qat_packed" metadata) loaded so that no F32 [out, in] Linear weight ever
 * exists: embeddings, norms, biases and lm_head are F32 masters in the params arena as usual
 * (sized without the Linear masters), each decoder Linear holds its qat_packed (li->pk) and the
 * forward, the block forward and the KV-cache decoder run the backend's qgemm on it
 * (llama_forward.c, llama_decode.c). Inference only: training plans, set_quant and save_hf are
 * refused with one line. CPU only for now (the CUDA qgemm is not written). */
#ifndef QAT_MODEL_LLAMA_PACKED_H
#define QAT_MODEL_LLAMA_PACKED_H

#include "model/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when DIR's safetensors carry "qat_packed" metadata; 0 otherwise, also when they cannot be
 * opened (the loader reports why). */
int qat_llama_dir_is_packed(const char *dir);

/* Loads a packed folder onto be (the cpu backend): config.json checked against the headers
 * first (llama_check.h qat_llama_check_packed: norms, embeddings, lm_head as usual, each Linear's
 * .qcodes rows and in_features against the config), then the params arena without the Linear
 * masters, then each Linear's packed tensors (qat_packed_st_read: shapes against one another and
 * the metadata, the zero-scale guard). Another backend is QAT_EUNSUPPORTED. */
qat_status qat_llama_load_packed(const char *dir, qat_backend *be, qat_llama **out);

/* What the model's weights occupy. */
typedef struct qat_llama_wbytes {
  int64_t linear_weights; /* sum of out x in over the decoder Linears */
  int64_t linear_bytes;   /* their bytes: packed codes + scales + zeros, or the F32 masters */
  int64_t resident;       /* every weight byte held: the params arena (masters, embeddings,
                           * norms, lm_head), compute weights, quantizer state, frozen codes,
                           * packed Linears */
  double bpw;             /* bits per Linear weight: 8 * linear_bytes / linear_weights */
} qat_llama_wbytes;
void qat_llama_weight_bytes(const qat_llama *m, qat_llama_wbytes *out);

#ifdef __cplusplus
}
#endif
#endif

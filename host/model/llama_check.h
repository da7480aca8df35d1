/* config.json checked against the weights' safetensors headers (names, shapes, dtypes) before
 * anything sized from the config is allocated (llama_check.c). Every loader of a model folder
 * goes through qat_llama_load, which calls qat_llama_check_weights; commands that read a folder
 * without loading the model (qat quantize --method rtn, the trainer's up-front memory estimate)
 * call qat_llama_check_dir first. */
#ifndef QAT_MODEL_LLAMA_CHECK_H
#define QAT_MODEL_LLAMA_CHECK_H

#include "model/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

struct qat_st_set;

/* c (already parsed from DIR/config.json) against the open weights of DIR: the number of layers
 * against the layer indices the files hold, then every tensor of the model's table (present,
 * shape, dtype F32/F16/BF16), then the implied parameter count against what the files hold.
 * Tensors the table does not name are accepted unless they belong to a layer past
 * num_hidden_layers. A mismatch is QAT_EFORMAT (a dtype QAT_EUNSUPPORTED), one line naming
 * config.json, the key and the tensor. Reads headers only; allocates the tensor table and the
 * model shell (bounded by the layers the files hold). The one place new checks (packed codes,
 * GGUF) belong. */
qat_status qat_llama_check_weights(const qat_llama_config *c, const struct qat_st_set *set,
                                   const char *dir);
/* The same for a packed folder (quant/packed.h): each decoder Linear's <base>.qcodes (present,
 * in a file with qat_packed metadata, U8 2-D, out rows) and "<base>.in_features" metadata (in)
 * instead of <base>.weight; the parameter count takes a packed Linear as out x in. */
qat_status qat_llama_check_packed(const qat_llama_config *c, const struct qat_st_set *set,
                                  const char *dir);
/* Loads DIR/config.json, opens DIR's safetensors (headers), checks, closes; *out (may be NULL)
 * gets the config when it passes. */
qat_status qat_llama_check_dir(const char *dir, qat_llama_config *out);

#ifdef __cplusplus
}
#endif
#endif

/* Subcommands of the `qat` binary. Each returns a status; main() prints the error and exits. */
#ifndef QAT_CLI_H
#define QAT_CLI_H

#include "core/status.h"

#include <stddef.h>
#include <stdint.h>

typedef qat_status (*qat_cmd_fn)(int argc, char **argv);

qat_status cmd_quantize(int argc, char **argv);
qat_status cmd_inspect(int argc, char **argv);
qat_status cmd_convert(int argc, char **argv);
qat_status cmd_eval(int argc, char **argv);
qat_status cmd_generate(int argc, char **argv);
qat_status cmd_tokenize(int argc, char **argv);
qat_status cmd_train(int argc, char **argv);
qat_status cmd_export(int argc, char **argv);
/* inspect_gguf.c: 1 when path starts with the GGUF magic; the GGUF summary of qat inspect. */
int qat_file_is_gguf(const char *path);
qat_status qat_inspect_gguf(const char *path);

struct qat_llama;
/* Loads --model DIR on --device (default cuda when usable) with optional --quant rtn:4g128; a
 * packed folder (qat_packed metadata) runs on its codes (cpu), packed != 0 (--packed) requires
 * one. Prints the bits per weight and resident weight bytes to stderr (model_open.c). */
qat_status qat_cli_open_model(const char *dir, const char *device, const char *quant, int packed,
                              struct qat_llama **out);

/* qat_quant.safetensors + qat_quant.json of quantized m into dir (quant_record.c); extra: more
 * JSON members ("\"damp\": 0.01, ...") or NULL. */
qat_status qat_cli_write_quant_record(const struct qat_llama *m, const char *dir,
                                      const char *method, const char *extra);

struct qat_qspec;
struct qat_flag;
/* qat quantize --method gptq (quantize_gptq.c), with cmd_quantize's flags. */
qat_status qat_cli_quantize_gptq(const char *model, const char *out, const struct qat_qspec *q,
                                 const struct qat_flag *fl, int nf);
/* qat export --format gptq --model PACKED_DIR (export_gptq.c). */
qat_status qat_cli_export_gptq(const char *packed_dir, const char *out);
/* qat export --format gptq --checkpoint RUN (export_gptq_run.c): the run through a temporary
 * packed folder (F32 scales) and qat_cli_export_gptq. */
qat_status qat_cli_export_gptq_run(const char *run, const char *out);
/* qat export --format gguf (export_gguf.c): from run (a training run) or model (a packed,
 * fake-quant-with-record or fp folder; quant: RTN spec for an fp folder); f16: unquantized 2-D
 * tensors as F16. */
qat_status qat_cli_export_gguf(const char *run, const char *model, const char *quant, int f16,
                               const char *out);
struct qat_qspec;
/* RUN or RUN/ckpt-N -> the trained model on the CPU (cmd_export.c); *q the run's spec. */
qat_status qat_cli_load_run(const char *run, struct qat_llama **out, struct qat_qspec *q,
                            char *model_dir, size_t nmodel, char *ckdir, size_t nck,
                            int64_t *step);

/* Tiny flag reader shared by commands: --name VALUE or --name=VALUE; flags without values are
 * booleans. Unknown flags are QAT_EUSAGE naming the flag. */
typedef struct qat_flag {
  const char *name; /* without dashes */
  int takes_value;
  const char *value; /* set when present ("1" for booleans) */
  const char *help;
} qat_flag;
qat_status qat_parse_flags(int argc, char **argv, qat_flag *flags, int nflags, const char *cmd);
const char *qat_flag_get(const qat_flag *flags, int nflags, const char *name);
qat_status qat_flag_int(const qat_flag *flags, int nflags, const char *name, long lo, long hi,
                        long dflt, long *out);
qat_status qat_flag_float(const qat_flag *flags, int nflags, const char *name, double dflt,
                          double *out);
void qat_print_usage(const char *cmd, const char *synopsis, const qat_flag *flags, int nflags);

#endif

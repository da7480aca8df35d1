/* Training job configuration: `qat train CONFIG.yaml [key.sub=value ...]`.
 * One table of keys (config.c) drives everything: the libcyaml schema used to parse the file,
 * command-line overrides by dotted path, defaults, printing (YAML, every key) and equality.
 * Loading = parse (unknown key / ill-typed value -> QAT_EUSAGE naming file:line and key) +
 * overrides + validation of values. File existence is checked separately (qat_config_check_files)
 * so tests need no model on disk. Every key is documented in configs/README.md. */
#ifndef QAT_TRAIN_CONFIG_H
#define QAT_TRAIN_CONFIG_H

#include "core/status.h"
#include "core/tensor.h" /* qat_device */
#include "train/schedule.h"
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qat_cfg_method {
  QAT_METHOD_QAT = 0,  /* end-to-end QAT through fake-quant */
  QAT_METHOD_BLOCK_AP, /* EfficientQAT block-wise reconstruction */
  QAT_METHOD_E2E_QP,   /* EfficientQAT end-to-end step sizes only */
  QAT_METHOD_PIPELINE, /* block_ap then e2e_qp */
  QAT_METHOD_GPTQ,     /* PTQ baseline with calibration windows (train/gptq_run.h) */
} qat_cfg_method;

typedef enum qat_cfg_grad {
  QAT_CFG_GRAD_STE = 0,      /* clipped STE for W; s, z not learned through the quantizer */
  QAT_CFG_GRAD_EFFICIENTQAT, /* LSQ+ style ds, dz without gradient scale (REFERENCE.md 2) */
  QAT_CFG_GRAD_LSQ,          /* same times 1 / sqrt(n_group * Qp) */
} qat_cfg_grad;

typedef enum qat_cfg_train_set {
  QAT_TRAIN_ALL = 0, /* W, s and z */
  QAT_TRAIN_SCALES,  /* s (and z) only; W frozen */
} qat_cfg_train_set;

typedef enum qat_cfg_init {
  QAT_CFG_INIT_MINMAX = 0, /* min-max (RTN) step sizes and zero points (REFERENCE.md 1) */
  QAT_CFG_INIT_MSE,        /* GPTQ clipping search (backend.h qat_qinit) */
} qat_cfg_init;

typedef enum qat_cfg_resume {
  QAT_RESUME_AUTO = 0, /* resume from the newest checkpoint in checkpoint.dir when there is one */
  QAT_RESUME_NEVER,    /* start from step 0; checkpoints already in the run dir are ignored */
  QAT_RESUME_MUST,     /* error when there is no checkpoint */
} qat_cfg_resume;

/* Same values as host/dist's qat_dist_kind. */
typedef enum {
  QAT_CFG_DIST_AUTO = 0,
  QAT_CFG_DIST_SINGLE,
  QAT_CFG_DIST_MPI,
  QAT_CFG_DIST_NCCL,
} qat_cfg_dist;

typedef struct qat_config {
  char *model; /* Hugging Face folder */
  struct {
    char *train, *val; /* token .npy files */
    int seq_len;
  } data;
  qat_cfg_method method;
  struct {
    int bits;
    int group; /* -1 per-channel, 0 per-tensor, else columns per group */
    bool sym;
    qat_cfg_grad grad;
    qat_cfg_train_set train;
    qat_cfg_init init; /* how s, z start */
    qat_dtype scale_dtype; /* QAT_F32 (default) or QAT_F16: s kept on the F16 grid at init and
                            * after every step (qat_qspec.scale_f16), so F16 exports are exact */
  } quant;
  struct {
    int64_t steps; /* optimizer steps */
    int batch, grad_accum; /* per rank: micro-batch windows, micro-batches per step */
    int global_batch;      /* windows per optimizer step over all ranks; 0 = world * batch *
                            * grad_accum, else grad_accum is derived (train/dist_train.h) */
    double lr, lr_quant, weight_decay;
    int64_t warmup;
    qat_lr_schedule schedule;
    double min_lr_ratio;
    int64_t seed;
    double clip;
    int64_t eval_every, eval_windows;
    int max_bad_steps;
    bool recompute; /* activation recomputation in the whole-model backward (memory for time) */
  } train;
  struct {
    bool enabled;
    double temperature, alpha;
  } distill;
  struct {
    char *dir;
    int64_t every;
    int keep;
    qat_cfg_resume resume;
  } checkpoint;
  qat_device device;
  struct {
    int samples, epochs;
    double lr_w, lr_quant;
    int batch;       /* calibration samples per Block-AP micro-batch (per rank) */
    int grad_accum;  /* micro-batches per Block-AP step (per rank) */
    int val_samples; /* held-out windows (data.val) for the per-block MSE; 0 = none */
    int64_t cache_device_mb, cache_host_mb; /* activation cache budget per tier */
    char *cache_dir; /* disk tier of the activation cache (NULL: none) */
    qat_dtype cache_dtype; /* slot dtype of the activation cache: QAT_BF16 (default) or QAT_F32 */
    int train_norms; /* also train the block's RMSNorm gains (at lr_w), as the reference code */
  } block_ap;
  struct {
    int samples;   /* calibration windows of data.seq_len from data.train (train.seed) */
    int batch;     /* windows per block pass */
    double damp;   /* Hessian damping, a fraction of its mean diagonal */
    int block;     /* columns per lazy-update block */
    int act_order; /* columns by decreasing Hessian diagonal, static groups */
    int true_sequential; /* q/k/v, o, gate/up, down in turn within a block */
    int skip_first;      /* leading tokens of each window left out of the Hessians */
    double first_weight; /* weight of each window's first token in the Hessians */
  } gptq;
  struct {
    int64_t steps;
    double lr;
    int batch, grad_accum;
    double clip;         /* global grad-norm clip (0 = off) */
    double warmup_ratio; /* warmup steps = round(warmup_ratio * steps) */
    int seq_len;         /* E2E-QP training context; 0 = data.seq_len (qat_config_e2e_seq_len) */
    int packed;          /* frozen codes packed, step sizes trained through qgemm (cpu only) */
  } e2e_qp;
  struct {
    qat_cfg_dist backend; /* communicator: auto (single for one rank, mpi on cpu, nccl on cuda) */
    double timeout_s;     /* a collective waiting longer ends the job (0 = never) */
    int zero;             /* 1: ZeRO-1 (AdamW moments sharded; train/zero.h) */
    double zero_bucket_mb; /* ZeRO-1: MiB of each rank's slice per reduce-scatter / all-gather */
    double bucket_mb;      /* MiB of F32 gradients per all-reduce bucket (train/grad_bucket.h) */
    qat_dtype grad_dtype;  /* the gradient all-reduce's wire dtype: QAT_F32 or QAT_BF16 */
  } dist;
  char *source; /* path the config was loaded from (not a key; NULL for defaults) */
} qat_config;

/* Every key at its default; strings NULL. Free with qat_config_free. */
void qat_config_defaults(qat_config *cfg);
void qat_config_free(qat_config *cfg);
/* Parse path, apply overrides ("key.sub=value", in order), validate. On error cfg is left
 * freed/empty and the message names the file, the line and the key (or the override). */
qat_status qat_config_load(const char *path, const char *const *overrides, int n,
                           qat_config *cfg);
/* One override "key.sub=value" (QAT_EUSAGE naming the key, or the key and value). */
qat_status qat_config_set(qat_config *cfg, const char *assignment);
/* Value checks (no file system access); QAT_EUSAGE naming the key and the value. */
qat_status qat_config_validate(const qat_config *cfg);
/* model is a directory with config.json, data.train and data.val are readable files. */
qat_status qat_config_check_files(const qat_config *cfg);

/* The effective config as YAML, every key, in a form qat_config_load reads back identically. */
qat_status qat_config_print(const qat_config *cfg, FILE *f);
/* Same into a malloc'd string. */
qat_status qat_config_to_string(const qat_config *cfg, char **out);
/* Written atomically (temporary + fsync + rename). */
qat_status qat_config_save(const qat_config *cfg, const char *path);
/* FNV-1a 64 of the printed YAML: equal configs hash equally (stored in checkpoints). */
uint64_t qat_config_hash(const qat_config *cfg);
/* Every key equal (source ignored). */
bool qat_config_equal(const qat_config *a, const qat_config *b);

const char *qat_cfg_method_name(qat_cfg_method m);
/* E2E-QP's training context length: e2e_qp.seq_len, or data.seq_len when that is 0. Block-AP's
 * calibration windows and every evaluation stay at data.seq_len. */
int qat_config_e2e_seq_len(const qat_config *cfg);

#ifdef __cplusplus
}
#endif
#endif

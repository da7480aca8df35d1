/* GPTQ of a whole LLaMA model: the PTQ baseline with calibration data (quant/gptq.h does one
 * Linear). Blocks in order, as the reference code's sequential mode: the calibration samples'
 * inputs to block l come from the already-quantized blocks 0..l-1 (the embeddings for block 0).
 * One pass of block l's full-precision masters over them accumulates, on the model's backend,
 * the four input second-moment matrices H = X^T X / rows (q, k, v share attn_norm's output; o
 * reads the attention output; gate, up share ffn_norm's; down reads the SwiGLU product); each of
 * the 7 Linears is then GPTQ'd on the host (masters <- w^, s, z <- their grid); a second pass, now
 * quantized, carries the samples on to block l + 1. The samples live in a one-set activation
 * cache (device, host, disk; train/actcache.h). By default all 7 inputs come from one pass of the
 * unquantized block, as the reference's default; true_sequential runs four passes per block.
 *
 * Reported per Linear: the relative output error on the calibration data,
 * tr(D H D^T) / tr(W H W^T) with D = w^ - W (= ||X D^T||^2 / ||X W^T||^2), for RTN with the
 * spec's init and for GPTQ: what GPTQ minimizes, so the number that must go down. */
#ifndef QAT_TRAIN_GPTQ_RUN_H
#define QAT_TRAIN_GPTQ_RUN_H

#include "dist/dist.h"
#include "model/llama.h"
#include "quant/gptq.h"
#include "train/actcache.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_gptq_run_opts {
  int T;                 /* tokens per calibration sample */
  int batch;             /* samples per block pass */
  qat_gptq_opts gptq;    /* damp, block, act_order */
  int true_sequential;   /* within a block: q/k/v, then o, then gate/up, then down, each from
                          * inputs through the Linears already quantized (the reference's
                          * --true-sequential); else all 7 from one unquantized pass */
  int skip_first;        /* leading tokens of every sample left out of H (still run); 0 = all
                          * (the reference). The first token of a window is an attention sink with
                          * massive activations on real models (SmolLM2: 99.8% of block 11's
                          * down_proj input energy); leaving it out made SmolLM2 worse (W4 g128
                          * 61.0 vs RTN 34.3): its output matters, and GPTQ then spends freely on
                          * the sink's channels. An experiment knob, not a default */
  float first_weight;    /* weight of each window's first token in H (0 or 1: the reference,
                          * so zero-initialized options keep it; with skip_first 0 only). That token is an attention sink: every later
                          * query reads its key and value, so its error costs about T times a
                          * plain token's, which the plain sum of x x^T does not see (on SmolLM2
                          * the reference GPTQ doubles the sink key's error while halving the
                          * rest's). Rows of position 0 are scaled by sqrt(w) before X^T X */
  qat_actcache_budget budget;
  qat_dtype cache_dtype; /* QAT_F32 (0, exact) or QAT_BF16 */
  /* Data parallelism (NULL: one process): each rank passes its own calibration samples (and
   * caches only their activations); each H is summed across ranks before the GPTQ of its
   * Linears, which every rank then runs alike (same H, same codes). samples_total: the
   * samples over all ranks (H's normalization). */
  qat_dist *dist;
  int64_t samples_total;
} qat_gptq_run_opts;

typedef struct qat_gptq_run_stats {
  double rel_err_rtn, rel_err_gptq; /* mean over the Linears of the relative output error */
  int64_t linears, dead;            /* Linears done; dead input columns zeroed */
  double seconds;
} qat_gptq_run_stats;

/* GPTQ of every decoder Linear of m (quantized by qat_llama_set_quant: its spec, and s, z
 * initialized, which only the RTN comparison uses; no layer frozen). calib: host tokens
 * [ncalib * T]. On return the masters hold w^ and s, z the grid, so m's fake-quant forward is the
 * GPTQ model (qat_llama_save_hf writes it). The block plan is freed. stats may be NULL. */
qat_status qat_gptq_run(qat_llama *m, const int32_t *calib, int64_t ncalib,
                        const qat_gptq_run_opts *o, qat_gptq_run_stats *stats);

#ifdef __cplusplus
}
#endif

#endif

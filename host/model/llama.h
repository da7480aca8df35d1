/* The LLaMA family (Llama-2/3, Mistral, Qwen2) as one config-driven graph of backend ops,
 * forward and backward, with every decoder Linear optionally fake-quantized.
 *
 * Dimension letters: B batch, T time, C = dim, F = hidden (intermediate), V vocab, L layers,
 * Hq query heads, Hkv kv heads, D head dim, N = B*T tokens.
 *
 * Parameters are fp32 masters on the model's backend, one arena per group: params, grads,
 * quantizer state (s, z), quantizer grads, activations. Compute dtype F32 on the CPU; on CUDA
 * F32 or BF16 (activations and w_hat), fp32 accumulation.
 *
 * Training step (what the trainers do):
 *   qat_llama_zero_grad(m);
 *   for each micro-batch: qat_llama_forward(m, tokens, B, T); qat_llama_xent(m, targets, scale,
 *                        &loss)  [or write m->dlogits yourself, e.g. distillation];
 *                        qat_llama_backward(m);
 *   qat_llama_finish_backward(m);   // fake-quant backward once on the accumulated dL/dw_hat
 *   optimizer over qat_llama_params(m)
 *
 * Layout rules (implementation notes, added by the model work):
 * - Gradients are laid out by qat_llama_plan(..., training = 1) for the current quantization and
 *   train_embeddings; set train_embeddings before planning (qat_llama_zero_grad re-lays them out
 *   if it changed since). Without train_embeddings, embeddings / lm_head / norms / biases have no
 *   gradient tensors (data NULL) but the activation gradient still flows through them.
 * - m->params is reallocated only by qat_llama_set_quant and when train_embeddings changes; its
 *   qat_tensor pointers stay valid otherwise. Gradient data move when the gradients are laid
 *   out again (set_quant after a training plan), so optimizers should read p->g->data each step.
 * - Frozen Linears stay in m->params (group WEIGHT) with a zero gradient (no gradient, data
 *   NULL, in layers laid out in code mode: see "Memory savers").
 * - Activations: everything the backward needs is kept per layer (unless recompute). Residual
 *   stream, logits and the lm_head GEMM are F32; Linear inputs/outputs, RoPE, attention and
 *   SwiGLU run in act_dtype (F32 or, on CUDA, BF16; set it before qat_llama_plan).
 *
 * Memory savers (added by the memory work; same gradients, less memory):
 * - m->recompute = 1 before a training qat_llama_plan keeps only each layer's input residual
 *   [N, C] F32 plus ONE layer's activation set; the backward re-runs each layer's forward into
 *   that set before its backward. Gradients are bit-identical on the CPU.
 * - Frozen codes: a layer whose 7 Linears are all frozen to codes when the gradients are laid
 *   out (qat_llama_plan with training re-lays them out when layers were frozen since; zero_grad
 *   does not) gets no dw, dz, dw_hat (data NULL); its backward turns each micro-batch's
 *   dL/dw_hat (in one shared scratch) into ds at once (ds += dq_backward(...)), and
 *   finish_backward skips it. Layers frozen after the layout keep the dw_hat path.
 * - Block-AP: with only a training block plan (qat_llama_plan_block(..., 1) and no whole-model
 *   training plan) the gradient arenas hold ONE layer's gradients (norms, dw, db, ds, dz,
 *   dw_hat), bound to the layer last passed to qat_llama_block_params / block_forward; the
 *   other layers' gradient tensors have data NULL, and binding another layer zeroes the buffers.
 *   Embedding / final-norm / lm_head gradients are not laid out in that mode. A later training
 *   qat_llama_plan lays out every layer's gradients again.
 * - qat_llama_memory / qat_llama_memory_estimate: the arenas' sizes, so a job that cannot fit
 *   fails at start with the numbers.
 */
#ifndef QAT_MODEL_LLAMA_H
#define QAT_MODEL_LLAMA_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_llama_config {
  char arch[32];  /* model_type: "llama", "mistral", "qwen2" */
  int dim;        /* C: hidden_size */
  int hidden;     /* F: intermediate_size */
  int n_layers;   /* L */
  int n_heads;    /* Hq */
  int n_kv_heads; /* Hkv */
  int head_dim;   /* D (head_dim key, else dim / n_heads) */
  int vocab;      /* V */
  int max_seq;    /* max_position_embeddings */
  float norm_eps; /* rms_norm_eps */
  float rope_theta;
  /* rope_scaling {"rope_type": "llama3", ...}; rope_type "" when absent */
  char rope_type[16];
  float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
  int rope_original_max_pos;
  int tie_embeddings; /* tie_word_embeddings */
  int qkv_bias;       /* Qwen2: bias on q, k, v */
  int o_bias;         /* Llama attention_bias: o_proj has a bias too (added by the model work) */
  int sliding_window; /* Mistral / Qwen2 sliding window; 0 = none. Sequences longer are refused */
  int bos_id, eos_id;
  qat_dtype file_dtype; /* torch_dtype, for writing back */
} qat_llama_config;

/* Reads DIR/config.json; unsupported architectures or fields are QAT_EUNSUPPORTED naming the
 * key (e.g. a hidden_act other than silu, rope_scaling types other than llama3). */
qat_status qat_llama_config_load(const char *dir, qat_llama_config *c);
/* Inverse frequencies [D/2] for RoPE including llama3 scaling. */
void qat_llama_inv_freq(const qat_llama_config *c, float *inv_freq);

/* One decoder Linear: y[N, out] = x[N, in] @ w_hat^T (+ b). */
typedef struct qat_linear {
  char name[96];   /* HF tensor name prefix, e.g. "model.layers.0.self_attn.q_proj" */
  int64_t in, out;
  qat_tensor w, dw;       /* [out, in] F32 master and its gradient */
  qat_tensor b, db;       /* [out] or unused (data NULL) */
  qat_tensor s, z, ds, dz; /* quantizer state [out, G] (z unused when sym); data NULL when off */
  qat_tensor w_hat;       /* [out, in] compute dtype: fake-quant(w), or a copy/cast of w */
  qat_tensor dw_hat;      /* [out, in] F32: accumulated dL/dw_hat when quantized */
  qat_tensor codes;       /* [out, in] U8 frozen integer codes (EfficientQAT, after Block-AP);
                           * data NULL until qat_llama_freeze_codes */
  int use_codes;          /* 1: w_hat = dq_forward(codes, s, z); only s trains (E2E-QP): dw and
                           * dz are never written in this mode (they keep zero_grad's zeros) */
  int frozen;             /* 1: w gets no gradient (E2E-QP, scales-only QAT) */
  const struct qat_packed *pk; /* packed codes (qat_llama_load_packed): the forward runs qgemm
                                * on them; w, w_hat have data NULL. NULL otherwise */
} qat_linear;

typedef struct qat_llama_layer {
  qat_tensor attn_norm, d_attn_norm; /* [C] */
  qat_linear q, k, v, o;             /* q: [Hq*D, C], k/v: [Hkv*D, C], o: [C, Hq*D] */
  qat_tensor ffn_norm, d_ffn_norm;   /* [C] */
  qat_linear gate, up, down;         /* gate/up: [F, C], down: [C, F] */
} qat_llama_layer;

/* A trainable tensor for optimizers and checkpoints. */
typedef enum { QAT_PG_WEIGHT = 0, QAT_PG_QUANT = 1, QAT_PG_OTHER = 2 } qat_param_group;
typedef struct qat_param {
  char name[112];       /* HF name ("...q_proj.weight") or quantizer name ("...q_proj.scales") */
  qat_tensor *p, *g;    /* F32, on the model's backend */
  qat_param_group group; /* decoder Linear weights | quantizer s, z | norms, embeddings, biases */
} qat_param;

typedef struct qat_llama {
  qat_llama_config cfg;
  qat_backend *be;
  qat_dtype act_dtype; /* F32 (CPU, tests) or BF16 (CUDA default) */
  int quantized;       /* fake-quant on for all decoder Linears */
  qat_qspec qspec;
  qat_tensor embed, d_embed;     /* [V, C] */
  qat_tensor final_norm, d_final_norm; /* [C] */
  qat_tensor lm_head, d_lm_head; /* [V, C]; aliases embed when tied */
  qat_llama_layer *layers;       /* [L] */
  qat_tensor inv_freq;           /* [D/2] */
  qat_tensor logits, dlogits;    /* [N, V] F32 after forward; dlogits consumed by backward */
  int B, T;                      /* activation capacity (qat_llama_plan) */
  int train_embeddings;          /* 0: embeddings, lm_head and norms get no gradient (default) */
  int recompute;                 /* 1: training plans keep one layer's activations and the
                                  * backward recomputes each layer (set before qat_llama_plan) */
  qat_param *params;             /* trainable tensors (rebuilt by qat_llama_set_quant) */
  int nparams;
  struct qat_llama_priv *priv;   /* arenas and activations */
  int masters_dropped;           /* qat_llama_drop_masters: inference only (w aliases w_hat) */
  int packed;                    /* qat_llama_load_packed: every decoder Linear is packed codes
                                  * (inference only; llama_packed.h) */
  /* Called by qat_llama_backward after layer l's gradients are complete (l = L-1 .. 0) and with
   * l = -1 once the embedding gradient is too; an error stops the backward. NULL: none. The
   * data-parallel trainer sets it for a step's last micro-batch to start the gradient all-reduce
   * of the finished layers while the backward goes on (train/grad_bucket.h). */
  qat_status (*bwd_hook)(void *ctx, int layer);
  void *bwd_hook_ctx;
} qat_llama;

/* Loads a HF folder (config.json + safetensors, single or sharded, F32/F16/BF16) onto be.
 * Weights become F32 masters; NaN/Inf weights are QAT_EINVAL naming the tensor. */
qat_status qat_llama_load(const char *dir, qat_backend *be, qat_llama **out);
/* A model with random weights (normal(0, 0.02), norms 1) for tests and benchmarks. */
qat_status qat_llama_random(const qat_llama_config *c, qat_backend *be, uint64_t seed,
                            qat_llama **out);
void qat_llama_free(qat_llama *m);

/* Turns fake-quant on for every decoder Linear with RTN-initialized s, z (q != NULL), or off. */
qat_status qat_llama_set_quant(qat_llama *m, const qat_qspec *q);
/* Allocates activations for batches up to B x T; training != 0 keeps what the backward needs. */
qat_status qat_llama_plan(qat_llama *m, int B, int T, int training);

/* tokens: host int32 [B*T]. Refreshes w_hat from the masters (fake-quant) and fills m->logits. */
qat_status qat_llama_forward(qat_llama *m, const int32_t *tokens, int B, int T);
/* Cross-entropy of m->logits against host targets [B*T] (-1 ignored): *loss = sum of token
 * losses * scale, and m->dlogits = scale * dloss/dlogits. *count = number of counted targets. */
qat_status qat_llama_xent(qat_llama *m, const int32_t *targets, float scale, double *loss,
                          int64_t *count);
/* Backward from m->dlogits through the last forward: gradients accumulate (+=). */
qat_status qat_llama_backward(qat_llama *m);
qat_status qat_llama_zero_grad(qat_llama *m);
/* Turns accumulated dL/dw_hat into dL/dw, ds, dz (fake-quant backward, once per step). */
qat_status qat_llama_finish_backward(qat_llama *m);

/* ---- EfficientQAT support: block-level passes and frozen integer codes ----
 * Block passes work on the residual stream of one decoder layer: x_in, x_out [B*T, C] F32 on
 * the model's backend. They use their own activation set (one layer's worth, so Block-AP on a
 * 7B model holds one block's activations, not 32), planned by qat_llama_plan_block. */
qat_status qat_llama_plan_block(qat_llama *m, int B, int T, int training);
/* x_out = layer l (x_in); w_hat of layer l refreshed first. */
qat_status qat_llama_block_forward(qat_llama *m, int l, const qat_tensor *x_in, qat_tensor *x_out,
                                   int B, int T);
/* Backward of the last qat_llama_block_forward of layer l from dx_out [B*T, C] F32: layer l's
 * gradients accumulate (dw_hat when quantized, else dw; ds/dz come from
 * qat_llama_block_finish_backward); dx_in (F32, may be NULL) is overwritten. */
qat_status qat_llama_block_backward(qat_llama *m, int l, const qat_tensor *dx_out,
                                    qat_tensor *dx_in);
/* fake-quant (or codes) backward of layer l's Linears, like qat_llama_finish_backward. */
qat_status qat_llama_block_finish_backward(qat_llama *m, int l);
/* Layer l's trainable tensors (a subset of m->params, same naming): *out points into m->params
 * order-preserving copies (malloc'd array, caller frees). With one-layer gradients (llama.h
 * "Memory savers") this binds them to layer l (zeroed when they held another layer's). */
qat_status qat_llama_block_params(qat_llama *m, int l, qat_param **out, int *n);
/* x_out = layer l (x_in) with the layer's unquantized masters: w_hat is refreshed with a plain
 * convert of w (no fake-quant, no codes), whatever m->quantized says; nothing is kept for a
 * backward (it runs in the block activation set, so the last block forward can no longer be
 * back-propagated). Block-AP's teacherless targets: block b's masters are untouched until block
 * b trains, so Y_b = fp_block_b(X_fp_b) comes from the model being quantized. Same ops as a
 * qat_llama_block_forward of an unquantized twin (bit-identical on the CPU). Needs a block plan.
 * The next forward of the layer refreshes its w_hat again. */
qat_status qat_llama_block_forward_fp(qat_llama *m, int l, const qat_tensor *x_in,
                                      qat_tensor *x_out, int B, int T);
/* Views of the Linear inputs the last block pass of B x T tokens (block_forward or
 * block_forward_fp) left in the block activation set, in m->act_dtype: in[0] = h1 [B*T, C]
 * (input of q, k, v), in[1] = att [B*T, Hq*D] (o), in[2] = h2 [B*T, C] (gate, up), in[3] =
 * act [B*T, F] (down). Valid until the next block pass (GPTQ's calibration statistics). */
qat_status qat_llama_block_linear_inputs(qat_llama *m, int B, int T, qat_tensor in[4]);
/* Layer l (or every layer when l < 0): codes = fq_codes(w, s, z), w <- w_hat (the weights
 * become exactly their dequantized values), use_codes = 1, frozen = 1. Afterwards the layer's
 * forward is (codes - z) * s and only s receives gradients (E2E-QP). */
qat_status qat_llama_freeze_codes(qat_llama *m, int l);
/* E2E-QP with packed codes (issue 11; cpu backend, group scales or per-channel with whole
 * groups): each Linear's U8 codes (or, for a layer not frozen yet, the codes a freeze would give,
 * frozen here without a U8 arena: w <- the dequantized weights) and zero points become a packed
 * descriptor (quant/packed_layout.h) whose F32 scales are s itself, li->pk points at it, and the
 * U8 codes arena and the compute weights (w_hat, data NULL from then on) are freed. Afterwards the forward runs qgemm, the backward qgemm (trans 1) for dx
 * and qgemm_ds for ds (no dL/dw_hat scratch is laid out); s trains exactly as before up to the
 * GEMMs' summation order. Undone by qat_llama_set_quant. */
qat_status qat_llama_pack_frozen(qat_llama *m);
/* out [out, in] F32 on the model's backend = (codes - z~) * s~ of frozen Linear li (U8 or packed
 * codes, the current s). */
qat_status qat_llama_linear_dequant(const qat_llama *m, qat_linear *li, qat_tensor *out);
/* A packed Linear's codes and zero points again from host codes U8 [out * in] and its current
 * z (a checkpoint's; s is read as is). */
qat_status qat_llama_pk_load_codes(qat_llama *m, qat_linear *li, const uint8_t *codes);
/* The U8 codes of frozen Linear li (U8 or packed) into host [out * in]. */
qat_status qat_llama_linear_codes(const qat_llama *m, const qat_linear *li, uint8_t *host);

/* Frees the whole-model activations (whole != 0: qat_llama_plan's) and / or the block set
 * (block != 0: qat_llama_plan_block's); the gradient arenas stay. A job releases what the
 * previous phase planned (Block-AP's block set before E2E-QP). */
void qat_llama_unplan(qat_llama *m, int whole, int block);
/* Inference-only models (a distillation teacher): builds the compute weights w_hat of every
 * Linear from the masters, then frees the Linear masters (the params arena is rebuilt with the
 * embeddings, norms, biases, lm_head and inv_freq only) and points each w at its w_hat. Only when
 * the compute weights are a separate copy (act_dtype BF16, not quantized); with F32 compute the
 * masters ARE the compute weights and nothing is dropped (*dropped_bytes = 0). Afterwards the
 * model can run forward passes only: set_quant, training plans and a change of act_dtype fail.
 * dropped_bytes may be NULL. */
qat_status qat_llama_drop_masters(qat_llama *m, size_t *dropped_bytes);

/* ---- memory ----
 * Bytes of each arena (what qat_arena_init asked for). */
typedef struct qat_llama_mem {
  size_t params; /* F32 masters + inv_freq */
  size_t grads;  /* dw, db, norm / embedding gradients */
  size_t qstate; /* s, z */
  size_t qgrads; /* ds, dz, dw_hat (+ the frozen-code scratch) */
  size_t wcomp;  /* w_hat in the compute dtype */
  size_t acts;   /* whole-model activations and scratch (qat_llama_plan) */
  size_t bacts;  /* block activations and scratch (qat_llama_plan_block) */
  size_t codes;  /* frozen codes: U8, or packed codes + zero points (qat_llama_pack_frozen) */
  size_t total;  /* sum of the above */
} qat_llama_mem;

/* A job's layout, for estimating without a model. */
typedef struct qat_llama_mem_job {
  qat_dtype act_dtype;     /* F32 or BF16 */
  const qat_qspec *qspec;  /* fake-quant spec; NULL: off */
  int train_embeddings;
  int B, T;                /* whole-model plan capacity; 0: no plan */
  int training, recompute; /* of the whole-model plan */
  int block_B, block_T;    /* block plan capacity; 0: no block plan */
  int block_training;
  int frozen_codes;        /* codes arena allocated (after the first freeze); with a training
                            * whole-model plan every layer is frozen (E2E-QP) */
  int drop_masters;        /* after qat_llama_drop_masters (inference-only teacher) */
  int packed_codes;        /* with frozen_codes: after qat_llama_pack_frozen (codes = packed
                            * codes + zero points, no dL/dw_hat scratch) */
} qat_llama_mem_job;

/* The arenas a model holds now. */
qat_status qat_llama_memory(const qat_llama *m, qat_llama_mem *out);
/* The same numbers for a config and job, computed without allocating any arena (equal to what
 * qat_llama_memory reports once the job is set up). QAT_EINVAL on a bad config or job. */
qat_status qat_llama_memory_estimate(const qat_llama_config *cfg, const qat_llama_mem_job *job,
                                     qat_llama_mem *out);
/* "params 25.10 GiB, grads ..., total 61.2 GiB" into buf. */
const char *qat_llama_memory_str(const qat_llama_mem *mm, char *buf, size_t n);

/* Writes a HF folder (config.json + model.safetensors in the config's dtype, other files of
 * src_dir copied through) with w_hat (dequantized) Linear weights when quantized; atomic. */
qat_status qat_llama_save_hf(const qat_llama *m, const char *src_dir, const char *out_dir);

#ifdef __cplusplus
}
#endif
#endif

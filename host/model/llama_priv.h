/* Private to the LLaMA model (llama*.c): the tensor table every part walks (sizing, loading,
 * saving, gradients share it, so they cannot disagree), the arenas and the saved activations.
 *
 * Dtypes of activations: the residual stream (x_in, x_mid, x_fin, dx), the final-norm output
 * (h_fin, dh_fin), logits and statistics are F32 always; the inputs and outputs of the decoder
 * Linears, RoPE, attention and SwiGLU (h1, q, k, v, att, h2, gate, up, act and their gradients)
 * are in m->act_dtype (F32, or BF16 on CUDA). The lm_head GEMM runs on F32 masters.
 * With BF16 this matches the CUDA ops' dtype rules: GEMM A, B one dtype, C F32 or that dtype
 * (the residual adds and dh accumulate in F32); RMSNorm x, out, dout, dx one dtype (F32 here,
 * its output converted to BF16 through the hn scratch). */
#ifndef QAT_MODEL_LLAMA_PRIV_H
#define QAT_MODEL_LLAMA_PRIV_H

#include "model/llama.h"

struct qat_st_set;

/* What a table entry is (decides group, gating by train_embeddings, load/save rules). */
typedef enum { LT_EMBED, LT_NORM, LT_LINEAR_W, LT_BIAS, LT_LMHEAD } lt_kind;

typedef struct lt_entry {
  char name[112];   /* HF tensor name */
  lt_kind kind;
  qat_tensor *p, *g; /* master and gradient fields of the model */
  qat_linear *lin;  /* owning Linear for LT_LINEAR_W / LT_BIAS */
  int ndim;
  int64_t shape[2];
} lt_entry;

/* All stored tensors in file order (lm_head only when untied). Caller frees *out. */
qat_status qat_llama_table(qat_llama *m, lt_entry **out, int *n);
/* The 7 decoder Linears of layer l in a fixed order (q, k, v, o, gate, up, down). */
void qat_llama_linears(qat_llama_layer *ly, qat_linear *out[7]);

/* One layer's saved activations, capacity Nmax = B * T tokens (views are cut per forward). */
typedef struct llama_act {
  qat_tensor x_in;  /* [N, C] F32 residual entering the layer */
  qat_tensor rstd1; /* [N] */
  qat_tensor h1;    /* [N, C] act: attn_norm(x_in) */
  qat_tensor q;     /* [N, Hq*D] act, after RoPE */
  qat_tensor k, v;  /* [N, Hkv*D] act, k after RoPE */
  qat_tensor att;   /* [N, Hq*D] act: attention output */
  qat_tensor lse;   /* [B*Hq*T] F32 */
  qat_tensor x_mid; /* [N, C] F32: x_in + o(att) */
  qat_tensor rstd2; /* [N] */
  qat_tensor h2;    /* [N, C] act: ffn_norm(x_mid) */
  qat_tensor gate, up, act; /* [N, F] act; act = silu(gate) * up */
} llama_act;

/* Scratch of one pass: the BF16 norm staging (forward) and the backward's working gradients.
 * The whole model and the block passes each have their own (llama_forward.c, llama_backward.c). */
typedef struct llama_scratch {
  qat_tensor hn;                     /* [N, C] F32 norm output before its cast (BF16 only) */
  qat_tensor dx;                     /* [N, C] F32: dL/d(residual), updated in place per layer */
  qat_tensor dh;                     /* [N, C] F32: gradient of a norm's output */
  qat_tensor dxa;                    /* [N, C] act: dx cast for the GEMMs (BF16 only) */
  qat_tensor dq, datt;               /* [N, Hq*D] act */
  qat_tensor dk, dv;                 /* [N, Hkv*D] act */
  qat_tensor dgate, dup, dact;       /* [N, F] act */
  qat_tensor dnorm_scratch;          /* [C] F32: absorbs norm grads when not trained */
  qat_tensor pkdx;                   /* [N, C] F32: an E2E-QP packed Linear's dx before it is
                                      * added to dh (qgemm overwrites); training + packed only */
} llama_scratch;

struct qat_llama_priv {
  qat_arena params;  /* masters + inv_freq */
  qat_arena grads;   /* dw, db, norm / embedding grads (plan with training) */
  qat_arena qstate;  /* s, z */
  qat_arena qgrads;  /* ds, dz, dw_hat (quantized and training) */
  qat_arena wcomp;   /* w_hat of every Linear when quantized or act_dtype != F32 */
  qat_arena acts;    /* activations (plan) */
  qat_arena bacts;   /* one layer's activations + scratch for the block passes (plan_block) */
  qat_arena codes;   /* U8 frozen codes of every Linear (first qat_llama_freeze_codes) */

  /* layout the arenas were built for (rebuilt when these change) */
  int grads_train_emb, grads_quant, grads_built;
  /* gradient layout modes (llama.h "Memory savers"):
   * grads_one: one layer's gradients, carved as layer 0's and bound to layer grads_bound; gtpl
   * keeps the carved tensors (LG_FIELDS per layer, qat_llama_layer_grads order).
   * grads_codes[l]: layer l was laid out in code mode (no dw, dz, dw_hat; ds accumulated in the
   * backward through code_g [max out*in] and code_ds [max out*G] F32 scratch in qgrads). */
  int grads_one, grads_bound;
  qat_tensor *gtpl;
  unsigned char *grads_codes; /* [L] */
  qat_tensor code_g, code_ds;
  qat_dtype wcomp_dtype;
  int wcomp_built;
  int params_built, params_quant, params_train_emb; /* m->params reallocated only on change */
  void *names;     /* tensor names for messages: table entries, inv_freq, Linears' s and z */
  int qnames_base; /* index of the first ".scales" name */

  int training;         /* planned with training != 0 */
  qat_dtype plan_dtype; /* act_dtype the activations were planned for */
  int recompute;        /* planned with m->recompute (training only): act[l].x_in are each
                         * layer's own, every other field of act[l] is the one shared set */
  int nact;             /* L when training, else 1 (one set reused by every layer) */
  llama_act *act;
  qat_tensor x_fin, rstd_fin, h_fin; /* [N, C] F32, [N], [N, C] F32 */
  qat_tensor logits_buf, dlogits_buf; /* [N, V] F32 */
  qat_tensor tokens, targets, losses; /* [N] I32, I32, F32 */
  qat_tensor dh_fin;                  /* [N, C] F32 (training) */
  llama_scratch scr;                  /* whole-model scratch */

  int fwd_B, fwd_T;   /* shape of the last forward (0: none) */
  int fwd_training;   /* activations of the last forward are complete for a backward */

  /* block passes (qat_llama_plan_block): independent of the whole-model plan above */
  int bB, bT;           /* capacity; 0: not planned */
  int btraining;        /* planned with training != 0 (also keeps the gradients laid out) */
  qat_dtype bplan_dtype;
  llama_act bact;       /* the one layer's activations; bact.x_in is a copy of x_in */
  llama_scratch bscr;
  int bfwd_layer;       /* layer of the last block forward (-1: none) */
  int bfwd_B, bfwd_T, bfwd_training;

  struct qat_packed *packed; /* [L * 7] the packed Linears (qat_llama_load_packed), else NULL */
  /* E2E-QP packed frozen codes (qat_llama_pack_frozen, llama_pkcodes.c): [L * 7] descriptors
   * whose scales point at each Linear's s (or its clamped copy eclamp[i], NULL until needed);
   * ecodes_bytes = their codes, zeros and clamped copies. NULL / 0 otherwise */
  struct qat_packed *ecodes;
  float **eclamp;
  size_t ecodes_bytes;
  int est_packed; /* memory estimate shell only: size as if packed (no dW scratch) */
};

/* The gradient fields of one layer (LG_FIELDS: its 2 norms, then per Linear dw, db, ds, dz,
 * dw_hat) and the tensors each is the gradient of (for names). */
#define LG_FIELDS (2 + 7 * 5)
void qat_llama_layer_grads(qat_llama_layer *ly, qat_tensor *g[LG_FIELDS],
                           const qat_tensor *of[LG_FIELDS]);
/* Binds the one-layer gradient buffers to layer l (no-op unless laid out that way). */
qat_status qat_llama_bind_grads(qat_llama *m, int l, const char *what);
/* Layer l's backward turns dL/dw_hat into ds at once (laid out in code mode). */
int qat_llama_code_layer(const qat_llama *m, int l);

/* One decoder layer forward (llama_forward.c), shared by the whole model, the block pass and the
 * recomputation in the backward. */
qat_status qat_llama_layer_fwd(qat_llama *m, qat_llama_layer *ly, llama_act *A,
                               const llama_scratch *S, qat_tensor *x_out_buf, int B, int T);

/* Seeded normal(0, 1) stream (splitmix64 + Box-Muller), reproducible across platforms. */
typedef struct { uint64_t s; } llama_rng;
float qat_llama_rng_normal(llama_rng *r);

/* Validates dims and derived fields of a config (message names config.json and the key). */
qat_status qat_llama_config_check(const qat_llama_config *c);
/* The model struct with its layers and Linears' shapes, no arena (for sizing). */
qat_status qat_llama_shell(const qat_llama_config *c, qat_llama **out);
/* Allocates the model struct, the params arena and carves the masters (zeroed). */
qat_status qat_llama_alloc(const qat_llama_config *c, qat_backend *be, qat_llama **out);
/* The same without the decoder Linear masters when no_linears (packed models: their w stay
 * data NULL). */
qat_status qat_llama_alloc_ex(const qat_llama_config *c, qat_backend *be, int no_linears,
                              qat_llama **out);
/* Reads table entry e from the open set into its master (shape and finiteness checked). */
qat_status qat_llama_load_tensor(qat_llama *m, const struct qat_st_set *set, const lt_entry *e,
                                 float **stage, size_t *stage_cap);
/* Frees the packed Linears (llama_packed.c; no-op for other models). */
void qat_llama_packed_release(qat_llama *m);
/* After masters are filled: uploads inv_freq, builds compute weights and the params list. */
qat_status qat_llama_finish_init(qat_llama *m);
/* Brings grads / quantizer-grads / compute-weight arenas and the params list in line with
 * (training, quantized, train_embeddings, act_dtype). */
qat_status qat_llama_sync_layout(qat_llama *m);
qat_status qat_llama_sync_wcomp(qat_llama *m);
/* Validation shared by qat_llama_plan and qat_llama_plan_block ("what" names the caller). */
qat_status qat_llama_plan_check(qat_llama *m, const char *what, int B, int T);

/* Activation-buffer specs: one list drives both sizing and carving of an arena. */
typedef struct llama_buf_spec {
  qat_tensor *t;
  qat_dtype dt;
  int64_t n;
  const char *name;
} llama_buf_spec;
/* Appends the specs of one layer's activation set / of a scratch set for N tokens to list
 * (at most 16 each); returns the new count. */
int qat_llama_act_specs(const qat_llama *m, llama_act *A, int64_t N, llama_buf_spec *list, int k);
int qat_llama_scratch_specs(const qat_llama *m, llama_scratch *S, int64_t N, int training,
                            llama_buf_spec *list, int k);
/* Sizes (pass 0) or carves (pass 1) the listed buffers. */
qat_status qat_llama_carve(qat_arena *a, const llama_buf_spec *list, int k, int pass, size_t *need);

/* The block activation set + scratch for N tokens (plan_block and the estimate). */
int qat_llama_block_specs(qat_llama *m, int64_t N, int training, llama_buf_spec *list);
/* Bytes of the frozen-codes arena. */
size_t qat_llama_codes_need(const qat_llama *m);

/* E2E-QP packed frozen codes (llama_pkcodes.c): bytes of every Linear's packed codes and zero
 * points; the packed scales of li made current (s itself, or its clamped copy); release. */
size_t qat_llama_pk_need(const qat_llama *m);
qat_status qat_llama_pk_sync(const qat_llama *m, qat_linear *li);
void qat_llama_pk_release(qat_llama *m);
/* Layer l's Linears are E2E-QP packed (pk set on a training model, not a packed folder). */
#define QAT_LLAMA_PKC(m, li) ((li)->pk && !(m)->packed)

/* Refreshes w_hat of layer l from the masters (fake-quant, codes, or a cast). */
qat_status qat_llama_refresh_layer(qat_llama *m, int l);
/* Block-pass argument checks: x [B*T, C] F32 on the model's device. */
qat_status qat_llama_check_block_call(const qat_llama *m, const char *what, int l,
                                      const qat_tensor *x_in, const qat_tensor *x_out, int B,
                                      int T);
qat_status qat_llama_check_stream(const qat_llama *m, const char *what, const char *role,
                                  const qat_tensor *x, int64_t N);

/* A contiguous view of the first n rows of buffer `buf` shaped as given. */
qat_tensor qat_llama_view(const qat_tensor *buf, int ndim, const int64_t *shape);
/* Shaped views of activation buffers. */
#define V1(buf, a) qat_llama_view(&(buf), 1, (int64_t[]){(a)})
#define V2(buf, a, b) qat_llama_view(&(buf), 2, (int64_t[]){(a), (b)})
#define V3(buf, a, b, c) qat_llama_view(&(buf), 3, (int64_t[]){(a), (b), (c)})
#define V4(buf, a, b, c, d) qat_llama_view(&(buf), 4, (int64_t[]){(a), (b), (c), (d)})

/* Sizing passes of llama.c's builders, shared with the estimate (llama_memory.c): bytes of the
 * params arena (no_linears: without the Linear weights), of the quantizer state for q, of the
 * compute weights; the grads / qgrads walk and the activation walk (pass 0 sizes, 1 carves). */
qat_status qat_llama_params_need(qat_llama *m, int no_linears, size_t *need);
size_t qat_llama_qstate_need(const qat_llama *m, const qat_qspec *q);
size_t qat_llama_wcomp_need(const qat_llama *m);
qat_status qat_llama_grads_walk(qat_llama *m, const lt_entry *t, int n, int one,
                                const unsigned char *codes, int pass, size_t *gneed,
                                size_t *qneed);
qat_status qat_llama_acts_walk(qat_llama *m, int64_t N, int pass, size_t *need);

/* A config as HF config.json text (for models without a source folder). Caller frees. */
char *qat_llama_config_json(const qat_llama_config *c);

#endif

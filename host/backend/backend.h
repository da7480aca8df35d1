/* The op table: one qat_backend per device. Model, trainers and eval call these ops only, never a
 * device directly, so one model and one training loop serve both devices and CPU-vs-GPU parity is
 * a test. The CPU backend (host/backend/cpu) is the plain-C reference; the CUDA backend (cuda/)
 * implements the same ops. Every op returns a status; an op a backend lacks is NULL and QAT_OP
 * turns the call into a QAT_EUNSUPPORTED error.
 *
 * Conventions for every op:
 * - tensors are row-major and contiguous; all tensors passed to one call live on the backend's
 *   device; shapes below use N rows (tokens), C channels, V vocab, F hidden, B batch, T time,
 *   H heads, D head dim.
 * - dtypes: the CPU backend computes in F32 only. The CUDA backend accepts F32 or BF16 for
 *   activations and weights (accumulating in F32); statistics (rstd, lse, losses), quantizer
 *   state (s, z) and optimizer state are always F32.
 * - "+=" marks outputs that accumulate (gradients of shared parameters, residual streams); all
 *   other outputs are overwritten. */
#ifndef QAT_BACKEND_H
#define QAT_BACKEND_H

#include "core/tensor.h"

struct qat_packed; /* quant/packed_layout.h */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- quantizer (REFERENCE.md sections 1-2) ---------------------------------------------------
 * W[R, C] is split along C into groups: group > 0: groups of `group` columns (a trailing partial
 * group allowed); group == -1: one group per row (per-channel); group == 0: one group for the
 * whole tensor (per-tensor). s and z have shape [R, G] with G = qat_qspec_groups(spec, C), or
 * [1, 1] per-tensor. z is unused (NULL) when sym. */
typedef enum qat_qgrad {
  QAT_QGRAD_STE = 0,      /* dL/dw only (clipped straight-through); s, z get no gradient */
  QAT_QGRAD_EFFICIENTQAT, /* LSQ+ convention for s and z, no gradient scale (default) */
  QAT_QGRAD_LSQ,          /* same times gs = 1 / sqrt(n_group * Qp) */
} qat_qgrad;

/* How fq_init picks s and z. Zero (a zero-initialized spec) is min-max, the REFERENCE default.
 * QAT_QINIT_MSE is GPTQ's clipping search (quant.py find_params with mse=True, norm 2.4, grid 100,
 * maxshrink 0.8), per group: for candidates i = 0 .. QAT_MSE_STEPS - 1 with shrink
 * p_i = (float)(1 - i / QAT_MSE_GRID) (1 - i/100 rounded once to float), (s_i, z_i) is the
 * min-max init of REFERENCE.md section 1 applied to the shrunk range (p_i * min, p_i * max) in
 * float (sym: amax = p_i * max|w|), exactly as for min-max; its error is
 * err_i = sum over the group of |w_hat - w|^2.4 with w_hat the fake-quant forward at (s_i, z_i)
 * (z~ = clamp(round(z_i), 0, qmax), codes clamped). The smallest err_i wins; ties keep the
 * earlier candidate (larger p), so p = 1 (min-max, i = 0) wins when nothing is better and the
 * chosen error is never above min-max's. Per-tensor and per-channel specs search their single
 * group the same way. */
typedef enum qat_qinit {
  QAT_QINIT_MINMAX = 0, /* RTN min-max (default) */
  QAT_QINIT_MSE,        /* min-max on a shrunk range, minimizing sum |w_hat - w|^2.4 */
} qat_qinit;
#define QAT_MSE_GRID 100 /* shrink step 1 / QAT_MSE_GRID */
#define QAT_MSE_STEPS 80 /* candidates: maxshrink 0.8 * grid; p from 1 down to 0.21 */

typedef struct qat_qspec {
  int bits;  /* 2..8 */
  int group; /* > 0 columns per group; -1 per-channel; 0 per-tensor */
  int sym;   /* 0 asymmetric (default), 1 symmetric */
  qat_qgrad grad;
  qat_qinit init; /* fq_init only; the forward and backward do not depend on it */
  int scale_f16;  /* 1 (quant.scale_dtype f16): s is kept on the F16 grid: fq_init rounds it
                   * (before z is derived from it), trainers apply fq_scale_f16 after every
                   * optimizer step, so F16-scale exports (GPTQ, GGUF) are exact */
} qat_qspec;

/* Number of groups per row for a row of C columns (1 for per-channel; per-tensor also 1 but
 * then s is [1, 1]). */
int64_t qat_qspec_groups(const qat_qspec *q, int64_t cols);
/* Shape of s / z for W[rows, cols]. */
void qat_qspec_sshape(const qat_qspec *q, int64_t rows, int64_t cols, int64_t shape[2]);
/* Validates bits/group/sym/grad/init; QAT_EINVAL naming the field. */
qat_status qat_qspec_check(const qat_qspec *q);
/* Argument checks shared by every backend's quantizer ops (messages name the op and tensor):
 * t exists, lives on be's device, has a dtype in `dtypes` (mask of 1u << qat_dtype) and shape
 * [r, c]; and the spec, w (F32 [R, C]), s and (asym) z shapes. */
struct qat_backend;
qat_status qat_fq_check_tensor(const struct qat_backend *be, const char *op, const char *role,
                               const qat_tensor *t, unsigned dtypes, int64_t r, int64_t c);
qat_status qat_fq_check_args(const struct qat_backend *be, const char *op, const qat_qspec *q,
                             const qat_tensor *w, const qat_tensor *s, const qat_tensor *z);
qat_status qat_codes_check_args(const struct qat_backend *be, const char *op, const qat_qspec *q,
                                const qat_tensor *codes, const qat_tensor *s, const qat_tensor *z);
/* Clamp bounds of REFERENCE.md section 1. */
#define QAT_S_MIN 1e-4f
#define QAT_S_MAX 1e4f

typedef struct qat_backend qat_backend;

struct qat_backend {
  const char *name; /* "cpu" or "cuda" */
  qat_device device;
  void *ctx; /* backend private state (streams, cuBLASLt handle, workspace) */
  /* qgemm's activation precision for the M = 1 forward (decode): 0 = F32 (default; exact up to
   * F32 summation), 1 = int8 activations, x quantized per 64 or 32 consecutive inputs to int8
   * with an F32 scale (llama.cpp's Q8_0) and dotted with the codes in integer arithmetic, the
   * way llama.cpp runs Q4_0 x Q8_0 (CPU; bits <= 7 and groups of a multiple of 32, else F32).
   * Set by `qat generate --act`; the bound on its error is in tests/test_qgemm.c. */
  int qgemm_act8;

  /* ---- memory ---- */
  qat_status (*alloc)(const qat_backend *be, void **p, size_t bytes);
  void (*free)(const qat_backend *be, void *p);
  qat_status (*memset0)(const qat_backend *be, void *p, size_t bytes);
  qat_status (*upload)(const qat_backend *be, void *dst, const void *host_src, size_t bytes);
  qat_status (*download)(const qat_backend *be, void *host_dst, const void *src, size_t bytes);
  qat_status (*copy)(const qat_backend *be, void *dst, const void *src, size_t bytes);
  qat_status (*sync)(const qat_backend *be);
  /* Host memory the device copies from/to fastest (pinned on CUDA, plain on CPU): staging and
   * the host tier of the Block-AP activation cache. */
  qat_status (*host_alloc)(const qat_backend *be, void **p, size_t bytes);
  void (*host_free)(const qat_backend *be, void *p);
  /* Memory the backend's device can still allocate and its size, in bytes (CPU: MemAvailable
   * of /proc/meminfo, else sysinfo; CUDA: cudaMemGetInfo): jobs check their estimate against
   * it at start. */
  qat_status (*mem_info)(const qat_backend *be, size_t *free_bytes, size_t *total_bytes);
  /* dst = src converted between float dtypes (F32, BF16, F16; any pair, round to nearest even,
   * F16 <-> BF16 through an exact F32 step), same numel. */
  qat_status (*convert)(const qat_backend *be, qat_tensor *dst, const qat_tensor *src);

  /* ---- quantizer ---- */
  /* Init of s (and z when asym) from w[R, C] (F32): min-max, or the MSE clipping search when
   * q->init == QAT_QINIT_MSE (see qat_qinit). A non-finite weight is QAT_EINVAL. */
  qat_status (*fq_init)(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                        qat_tensor *s, qat_tensor *z);
  /* w_hat[R, C] (F32 or BF16) = fake-quant(w) with the current s, z. */
  qat_status (*fq_forward)(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                           const qat_tensor *s, const qat_tensor *z, qat_tensor *w_hat);
  /* From g = dL/dw_hat [R, C] (F32 or BF16): dw [R, C] F32 (NULL to skip), ds, dz [R, G] F32
   * (NULL to skip; not written under QAT_QGRAD_STE). All overwritten, one pass. */
  qat_status (*fq_backward)(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                            const qat_tensor *s, const qat_tensor *z, const qat_tensor *g,
                            qat_tensor *dw, qat_tensor *ds, qat_tensor *dz);
  /* s (F32, any shape) in place onto the F16 grid: s = f16(clamp(s, QAT_S_MIN, QAT_S_MAX)),
   * round to nearest even. The clamp comes first, so s stays inside F16's normal range and the
   * forward's own clamp leaves it unchanged (f16(1e-4) = 1.000166e-4 >= QAT_S_MIN; 1e4 is an F16
   * number); -inf -> f16(QAT_S_MIN), +inf -> QAT_S_MAX; NaN stays NaN, as in every quantizer
   * clamp (a NaN s gives NaN weights, which the trainers' non-finite step check sees). The
   * projection step of projected AdamW under qat_qspec.scale_f16. */
  qat_status (*fq_scale_f16)(const qat_backend *be, qat_tensor *s);

  /* Frozen integer codes (EfficientQAT E2E-QP): codes U8 [R, C] in [0, 2^bits) (asym) or the
   * code + 2^(bits-1) offset (sym), fixed z; w_hat[R, C] (F32 or BF16) = (codes - z~) * s~
   * (sym: (codes - 2^(bits-1)) * s~), with s~ = clamp(s) and z~ = clamp(round(z)) as in
   * fq_forward. */
  qat_status (*dq_forward)(const qat_backend *be, const qat_qspec *q, const qat_tensor *codes,
                           const qat_tensor *s, const qat_tensor *z, qat_tensor *w_hat);
  /* ds[R, G] F32 = sum over the group of g * (codes - z~) (dw_hat/ds, no gradient scale);
   * overwritten. Gradient through the s clamp is straight-through. */
  qat_status (*dq_backward)(const qat_backend *be, const qat_qspec *q, const qat_tensor *codes,
                            const qat_tensor *z, const qat_tensor *g, qat_tensor *ds);
  /* codes U8 [R, C] = the integer codes fq_forward would use for w with s, z (the code q of
   * REFERENCE.md section 1, sym offset by 2^(bits-1)); fq_forward(w) == dq_forward(codes). */
  qat_status (*fq_codes)(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                         const qat_tensor *s, const qat_tensor *z, qat_tensor *codes);

  /* ---- dense ---- */
  /* C[M, N] = alpha * op(A) @ op(B) + beta * C; op(A) is [M, K] (A stored [K, M] when ta),
   * op(B) is [K, N] (B stored [N, K] when tb). Linear layers: y = x @ W^T is ta=0, tb=1. */
  qat_status (*gemm)(const qat_backend *be, int ta, int tb, int64_t M, int64_t N, int64_t K,
                     float alpha, const qat_tensor *A, const qat_tensor *B, float beta,
                     qat_tensor *C);
  /* Packed low-bit GEMM (issue 11; W[N, K] in quant/packed_layout.h's format, its buffers on
   * the backend's device), x and y F32, y overwritten:
   *   trans 0: y[M, N] = x[M, K] @ dequant(W)^T   (a Linear's forward)
   *   trans 1: y[M, K] = x[M, N] @ dequant(W)     (its backward dx = dy @ dequant(W)) */
  qat_status (*qgemm)(const qat_backend *be, int trans, int64_t M, const struct qat_packed *w,
                      const qat_tensor *x, qat_tensor *y);
  /* E2E-QP's step-size gradient through packed frozen codes (W[N, K] as for qgemm): with
   * dW = dy^T @ x (dy [M, N], x [M, K] F32), ds[N, G] F32 = sum over the group of
   * dW * (code - zp), overwritten; dq_backward of the unpacked codes applied to
   * gemm(1, 0, dy, x) (bit for bit when W fits one panel, else to dW's F32 summation order),
   * without the whole F32 dW (CPU: 4 MB row panels). Straight-through clamp. */
  qat_status (*qgemm_ds)(const qat_backend *be, int64_t M, const struct qat_packed *w,
                         const qat_tensor *dy, const qat_tensor *x, qat_tensor *ds);
  /* y += alpha * x (same numel). */
  qat_status (*axpy)(const qat_backend *be, float alpha, const qat_tensor *x, qat_tensor *y);
  /* x *= alpha. */
  qat_status (*scale)(const qat_backend *be, float alpha, qat_tensor *x);
  /* *out = sum of x^2 in double (NaN/Inf propagate: used for grad norms and finiteness). */
  qat_status (*sumsq)(const qat_backend *be, const qat_tensor *x, double *out);
  /* y[N, C] += b[C] */
  qat_status (*bias_fwd)(const qat_backend *be, qat_tensor *y, const qat_tensor *b);
  /* db[C] += sum over rows of dy[N, C] */
  qat_status (*bias_bwd)(const qat_backend *be, const qat_tensor *dy, qat_tensor *db);

  /* ---- LLaMA blocks ---- */
  /* out[N, C] = table[tokens[n], :]; tokens I32 [N] (each in [0, V), checked). */
  qat_status (*embedding_fwd)(const qat_backend *be, const qat_tensor *tokens,
                              const qat_tensor *table, qat_tensor *out);
  /* dtable[V, C] += scatter of dout[N, C]. */
  qat_status (*embedding_bwd)(const qat_backend *be, const qat_tensor *tokens,
                              const qat_tensor *dout, qat_tensor *dtable);
  /* out[N, C] = x / rms(x) * w; rstd[N] F32 = 1 / sqrt(mean(x^2) + eps). */
  qat_status (*rmsnorm_fwd)(const qat_backend *be, const qat_tensor *x, const qat_tensor *w,
                            float eps, qat_tensor *out, qat_tensor *rstd);
  /* dx[N, C] += ..., dw[C] += ... */
  qat_status (*rmsnorm_bwd)(const qat_backend *be, const qat_tensor *dout, const qat_tensor *x,
                            const qat_tensor *w, const qat_tensor *rstd, qat_tensor *dx,
                            qat_tensor *dw);
  /* In place on x[B, T, H, D], Hugging Face rotate-half convention: for i < D/2, angle
   * a = (pos0 + t) * inv_freq[i]; (x[i], x[i + D/2]) -> (x[i] cos a - x[i+D/2] sin a,
   * x[i+D/2] cos a + x[i] sin a). inverse != 0 rotates by -a (the backward). inv_freq [D/2] F32. */
  qat_status (*rope)(const qat_backend *be, qat_tensor *x, const qat_tensor *inv_freq,
                     int64_t pos0, int inverse);
  /* Causal attention with grouped-query heads (query head h reads kv head h / (Hq / Hkv)):
   * q[B, T, Hq, D], k, v[B, T, Hkv, D] -> out[B, T, Hq, D], lse[B, Hq, T] F32 (log-sum-exp of
   * the scaled scores, kept for the backward). scale is usually 1/sqrt(D). */
  qat_status (*attention_fwd)(const qat_backend *be, const qat_tensor *q, const qat_tensor *k,
                              const qat_tensor *v, float scale, qat_tensor *out, qat_tensor *lse);
  /* dq, dk, dv overwritten. */
  qat_status (*attention_bwd)(const qat_backend *be, const qat_tensor *dout, const qat_tensor *q,
                              const qat_tensor *k, const qat_tensor *v, const qat_tensor *out,
                              const qat_tensor *lse, float scale, qat_tensor *dq,
                              qat_tensor *dk, qat_tensor *dv);
  /* Decode attention (generation with a KV cache, host/model/llama_decode.c): one query per
   * sequence, the newest position, against the first T cached keys (no mask below T), GQA as
   * attention_fwd: q[B, Hq, D], k_cache, v_cache [B, S, Hkv, D] with 1 <= T <= S, out[B, Hq, D] =
   * sum_{j < T} softmax_j(scale * q . k_j) v_j. Same dtype for all four. */
  qat_status (*attention_decode)(const qat_backend *be, const qat_tensor *q,
                                 const qat_tensor *k_cache, const qat_tensor *v_cache, int64_t T,
                                 float scale, qat_tensor *out);
  /* out[N, F] = silu(gate) * up */
  qat_status (*swiglu_fwd)(const qat_backend *be, const qat_tensor *gate, const qat_tensor *up,
                           qat_tensor *out);
  /* dgate, dup [N, F] overwritten. */
  qat_status (*swiglu_bwd)(const qat_backend *be, const qat_tensor *dout, const qat_tensor *gate,
                           const qat_tensor *up, qat_tensor *dgate, qat_tensor *dup);
  /* Softmax cross-entropy over logits[N, V] with targets I32 [N] (-1: ignored, loss 0):
   * losses[N] F32 = logsumexp - logit[target]; when dlogits is non-NULL it gets
   * dscale * (softmax - onehot) (zero rows for ignored targets); dlogits may alias logits. */
  qat_status (*xent)(const qat_backend *be, const qat_tensor *logits, const qat_tensor *targets,
                     qat_tensor *losses, qat_tensor *dlogits, float dscale);
  /* Knowledge distillation (train/distill.h is the host double reference) over student and
   * teacher logits [N, V] (same dtype) with targets I32 [N] (-1: ignored), T = temperature > 0,
   * alpha in [0, 1]. Per row with a target:
   *   losses[n] F32 = (1 - alpha) * CE(student, target)
   *                   + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
   *   dlogits = dscale * [(1 - alpha) * (softmax(student) - onehot)
   *                       + alpha * T * (softmax(student / T) - softmax(teacher / T))]
   * ignored rows: loss 0, zero dlogits. losses may be NULL; dlogits NULL: loss only; dlogits may
   * alias student (CUDA: dlogits F32 or BF16, the student's dtype when aliased). */
  qat_status (*kd_xent)(const qat_backend *be, const qat_tensor *student,
                        const qat_tensor *teacher, const qat_tensor *targets, float temperature,
                        float alpha, float dscale, qat_tensor *losses, qat_tensor *dlogits);

  /* ---- optimizer ---- */
  /* AdamW on F32 param/grad/m/v (same numel), step t >= 1 (bias correction), decoupled decay. */
  qat_status (*adamw)(const qat_backend *be, qat_tensor *param, const qat_tensor *grad,
                      qat_tensor *m, qat_tensor *v, float lr, float beta1, float beta2, float eps,
                      float weight_decay, int64_t t);
};

/* Call an op, turning a missing one into an error naming it and the backend. */
#define QAT_OP(be, op, ...)                                                                        \
  ((be)->op ? (be)->op((be), __VA_ARGS__)                                                          \
            : QAT_FAIL(QAT_EUNSUPPORTED, "op " #op " is not implemented on the %s backend",      \
                       (be)->name))

/* The CPU backend (a process-wide singleton; never fails). */
qat_backend *qat_backend_cpu(void);
/* The CUDA backend on the current device, created on first use; QAT_EDEVICE when qat was built
 * without CUDA or no GPU is visible. */
qat_status qat_backend_cuda(qat_backend **out);
/* "cpu" | "cuda" */
qat_status qat_backend_by_name(const char *name, qat_backend **out);
/* True when a CUDA device is usable (for tests to skip). */
int qat_cuda_available(void);

/* Tensor transfers between a host tensor and a device tensor of the same numel and dtype. */
qat_status qat_tensor_upload(const qat_backend *be, qat_tensor *dst, const qat_tensor *host_src);
qat_status qat_tensor_download(const qat_backend *be, qat_tensor *host_dst, const qat_tensor *src);

/* Registration hooks: each op family fills its entries of the table. */
void qat_cpu_register_quant(qat_backend *be);
void qat_cpu_register_nn(qat_backend *be);
void qat_cpu_register_codes(qat_backend *be); /* cpu/codes.c: dq_forward, dq_backward, fq_codes */
void qat_cpu_register_qgemm(qat_backend *be); /* cpu/qgemm.c */
void qat_cpu_register_qgemm_ds(qat_backend *be); /* cpu/qgemm_ds.c */
#ifdef QAT_HAVE_CUDA
qat_status qat_cuda_create(qat_backend *be); /* cuda/backend.cu */
int qat_cuda_device_count(void);
#endif

#ifdef __cplusplus
}
#endif

#endif

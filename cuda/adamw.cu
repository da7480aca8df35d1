// AdamW on the CUDA backend (backend.h "optimizer"): F32 param, grad, m, v of one numel; the
// PyTorch torch.optim.AdamW update (decoupled decay applied to the pre-update parameter):
//   p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Bias corrections are computed once in double on the host. Vectorized: float4 over the 16-byte
// aligned body when all four pointers allow it, scalar otherwise and for the tail.
#include "cuda/nn_common.cuh"

struct adamw_args {
  float lr, b1, b2, eps, decay; /* decay = 1 - lr * wd */
  float step, inv_sqrt_bc2;     /* lr / bc1, 1 / sqrt(bc2) */
};

__device__ __forceinline__ void adamw_one(float &p, float g, float &m, float &v,
                                          const adamw_args &a) {
  p *= a.decay;
  m = a.b1 * m + (1.0f - a.b1) * g;
  v = a.b2 * v + (1.0f - a.b2) * g * g;
  p -= a.step * m / (sqrtf(v) * a.inv_sqrt_bc2 + a.eps);
}

__global__ void adamw_vec4_kernel(float4 *p, const float4 *g, float4 *m, float4 *v, int64_t n4,
                                  adamw_args a) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
       i += (int64_t)gridDim.x * blockDim.x) {
    float4 pp = p[i], gg = g[i], mm = m[i], vv = v[i];
    adamw_one(pp.x, gg.x, mm.x, vv.x, a);
    adamw_one(pp.y, gg.y, mm.y, vv.y, a);
    adamw_one(pp.z, gg.z, mm.z, vv.z, a);
    adamw_one(pp.w, gg.w, mm.w, vv.w, a);
    p[i] = pp;
    m[i] = mm;
    v[i] = vv;
  }
}

__global__ void adamw_scalar_kernel(float *p, const float *g, float *m, float *v, int64_t n,
                                    adamw_args a) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float pp = p[i], mm = m[i], vv = v[i];
    adamw_one(pp, g[i], mm, vv, a);
    p[i] = pp;
    m[i] = mm;
    v[i] = vv;
  }
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static qat_status cu_adamw(const qat_backend *be, qat_tensor *param, const qat_tensor *grad,
                           qat_tensor *m, qat_tensor *v, float lr, float beta1, float beta2,
                           float eps, float weight_decay, int64_t t) {
  QAT_TRY(nn_check_dtype("adamw", param, "param", QAT_F32));
  QAT_TRY(nn_check_dtype("adamw", grad, "grad", QAT_F32));
  QAT_TRY(nn_check_dtype("adamw", m, "m", QAT_F32));
  QAT_TRY(nn_check_dtype("adamw", v, "v", QAT_F32));
  const int64_t n = qat_numel(param);
  QAT_TRY(nn_check_numel("adamw", grad, "grad", n));
  QAT_TRY(nn_check_numel("adamw", m, "m", n));
  QAT_TRY(nn_check_numel("adamw", v, "v", n));
  if (t < 1)
    return QAT_FAIL(QAT_EINVAL, "cuda adamw: step t = %lld for %s (must be >= 1)", (long long)t,
                    nn_name(param, "param"));
  // the CPU backend's hyperparameter checks: beta2 == 1 would divide by a zero bias correction
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
    return QAT_FAIL(QAT_EINVAL, "cuda adamw: betas (%g, %g) outside [0, 1)", (double)beta1,
                    (double)beta2);
  if (!(eps >= 0.0f) || !isfinite(lr) || !isfinite(weight_decay))
    return QAT_FAIL(QAT_EINVAL, "cuda adamw: bad hyperparameters lr %g eps %g weight_decay %g",
                    (double)lr, (double)eps, (double)weight_decay);
  if (n == 0) return QAT_OK;
  const double bc1 = 1.0 - pow((double)beta1, (double)t);
  const double bc2 = 1.0 - pow((double)beta2, (double)t);
  adamw_args a;
  a.lr = lr;
  a.b1 = beta1;
  a.b2 = beta2;
  a.eps = eps;
  a.decay = 1.0f - lr * weight_decay;
  a.step = (float)(lr / bc1);
  a.inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
  cudaStream_t s = qat_cuda(be)->stream;
  float *p = (float *)param->data, *mp = (float *)m->data, *vp = (float *)v->data;
  const float *g = (const float *)grad->data;
  int64_t done = 0;
  if (aligned16(p) && aligned16(g) && aligned16(mp) && aligned16(vp) && n >= 4) {
    const int64_t n4 = n / 4;
    adamw_vec4_kernel<<<nn_blocks(n4, 256, 2, 8 * 65535), 256, 0, s>>>(
        (float4 *)p, (const float4 *)g, (float4 *)mp, (float4 *)vp, n4, a);
    QAT_CUDA_LAUNCHED();
    done = n4 * 4;
  }
  if (done < n) {
    adamw_scalar_kernel<<<nn_blocks(n - done, 256, 2, 8 * 65535), 256, 0, s>>>(
        p + done, g + done, mp + done, vp + done, n - done, a);
    QAT_CUDA_LAUNCHED();
  }
  return QAT_OK;
}

void qat_cuda_register_adamw(qat_backend *be) { be->adamw = cu_adamw; }

// CUDA dense, LLaMA-block and optimizer ops: each op family lives in its own file (gemm.cu,
// elementwise.cu, embedding.cu, rmsnorm.cu, rope.cu, attention.cu, swiglu.cu, xent.cu, adamw.cu)
// with its kernels, launchers and registration hook; this file fills the op table from them.
#include "cuda/nn_common.cuh"

void qat_cuda_register_kd(qat_backend *be); // kd.cu: kd_xent
void qat_cuda_register_decode(qat_backend *be); // decode_attention.cu: attention_decode

void qat_cuda_register_nn(qat_backend *be) {
  qat_cuda_register_gemm(be);
  qat_cuda_register_elementwise(be);
  qat_cuda_register_embedding(be);
  qat_cuda_register_rmsnorm(be);
  qat_cuda_register_rope(be);
  qat_cuda_register_attention(be);
  qat_cuda_register_decode(be);
  qat_cuda_register_swiglu(be);
  qat_cuda_register_xent(be);
  qat_cuda_register_kd(be);
  qat_cuda_register_adamw(be);
}

// CUDA ops on frozen integer codes (EfficientQAT E2E-QP). Being written.
#include "cuda/common.cuh"

void qat_cuda_register_codes(qat_backend *be) { (void)be; }

/* quant/packed_dev.c: a packed weight copied into a backend's memory (the form the CUDA qgemm
 * reads). On the CPU backend (always run): the copy's bytes equal the source's, the slack past
 * every buffer is zero, the CPU qgemm on the copy is bit-identical to the qgemm on the source,
 * and a descriptor missing its zeros is refused. On CUDA (when a GPU is visible): the buffers
 * download to the source's bytes, slack included. */
#include "testutil.h"

#include "quant/packed.h"
#include "quant/packed_dev.h"

#include <stdlib.h>
#include <string.h>

static void make(qat_packed *p, int bits, int group, int sym, int64_t N, int64_t K, qat_dtype sd) {
  qat_qspec q = {.bits = bits, .group = group, .sym = sym};
  TU_REQUIRE_OK(qat_packed_alloc(p, &q, N, K, sd, "w"));
  tu_rng r = {(uint64_t)(bits * 131 + group + sym)};
  for (int64_t i = 0; i < N * p->row_bytes; i++) p->codes[i] = (uint8_t)tu_next(&r);
  for (int64_t i = 0; i < N * p->zrow_bytes; i++) p->zeros[i] = (uint8_t)tu_next(&r);
  for (int64_t i = 0; i < N * p->G; i++) {
    float s = tu_uniform(&r, 0.01f, 0.1f);
    if (sd == QAT_F16) ((uint16_t *)p->scales)[i] = qat_f32_to_f16(s);
    else ((float *)p->scales)[i] = s;
  }
}

static size_t sbytes(const qat_packed *p) {
  return (size_t)(p->N * p->G) * (p->sdtype == QAT_F16 ? 2 : 4);
}

START_TEST(cpu_copy) {
  qat_backend *be = qat_backend_cpu();
  for (int sym = 0; sym <= 1; sym++) {
    qat_packed p, d;
    make(&p, 3, 32, sym, 13, 96, sym ? QAT_F32 : QAT_F16);
    TU_REQUIRE_OK(qat_packed_upload(be, &p, &d, "w"));
    ck_assert(d.codes != p.codes && d.scales != p.scales);
    ck_assert_int_eq(d.bits, p.bits);
    ck_assert_int_eq(d.N, p.N);
    ck_assert(memcmp(d.codes, p.codes, (size_t)(p.N * p.row_bytes)) == 0);
    ck_assert(memcmp(d.scales, p.scales, sbytes(&p)) == 0);
    static const uint8_t zero[QAT_PACKED_SLACK];
    ck_assert(memcmp(d.codes + p.N * p.row_bytes, zero, QAT_PACKED_SLACK) == 0);
    ck_assert(memcmp((uint8_t *)d.scales + sbytes(&p), zero, QAT_PACKED_SLACK) == 0);
    if (!sym) {
      ck_assert(memcmp(d.zeros, p.zeros, (size_t)(p.N * p.zrow_bytes)) == 0);
      ck_assert(memcmp(d.zeros + p.N * p.zrow_bytes, zero, QAT_PACKED_SLACK) == 0);
    } else {
      ck_assert(d.zeros == NULL);
    }
    float x[2 * 96], y1[2 * 13], y2[2 * 13];
    tu_rng r = {5};
    tu_fill_normal(&r, x, 2 * 96, 1.0f);
    qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, 2, 96);
    qat_tensor t1 = qat_view2(y1, QAT_F32, QAT_DEV_CPU, 2, 13), t2 = qat_view2(y2, QAT_F32, QAT_DEV_CPU, 2, 13);
    TU_REQUIRE_OK(QAT_OP(be, qgemm, 0, 2, &p, &tx, &t1));
    TU_REQUIRE_OK(QAT_OP(be, qgemm, 0, 2, &d, &tx, &t2));
    ck_assert(memcmp(y1, y2, sizeof y1) == 0);
    qat_packed_free_on(be, &d);
    ck_assert(d.codes == NULL && d.scales == NULL);
    qat_packed_free(&p);
  }
  qat_packed p, d;
  make(&p, 4, 32, 0, 4, 64, QAT_F32);
  qat_packed broken = p;
  broken.zeros = NULL; /* asym without zeros */
  ck_assert_int_eq(qat_packed_upload(be, &broken, &d, "w"), QAT_EINVAL);
  ck_assert(d.codes == NULL);
  qat_packed_free(&p);
}
END_TEST

START_TEST(cuda_copy) {
  qat_backend *gpu = NULL;
  if (!tu_need_gpu(&gpu)) return;
  qat_packed p, d;
  make(&p, 5, 64, 0, 9, 128, QAT_F16);
  TU_REQUIRE_OK(qat_packed_upload(gpu, &p, &d, "w"));
  size_t cb = (size_t)(p.N * p.row_bytes) + QAT_PACKED_SLACK;
  size_t zb = (size_t)(p.N * p.zrow_bytes) + QAT_PACKED_SLACK;
  size_t sb = sbytes(&p) + QAT_PACKED_SLACK;
  uint8_t *c = malloc(cb), *z = malloc(zb), *s = malloc(sb);
  TU_REQUIRE_OK(gpu->download(gpu, c, d.codes, cb));
  TU_REQUIRE_OK(gpu->download(gpu, z, d.zeros, zb));
  TU_REQUIRE_OK(gpu->download(gpu, s, d.scales, sb));
  ck_assert(memcmp(c, p.codes, cb) == 0); /* the host buffers carry zero slack too */
  ck_assert(memcmp(z, p.zeros, zb) == 0);
  ck_assert(memcmp(s, p.scales, sb) == 0);
  free(c);
  free(z);
  free(s);
  qat_packed_free_on(gpu, &d);
  qat_packed_free(&p);
}
END_TEST

int main(void) {
  Suite *s = suite_create("packed_dev");
  TCase *tc = tcase_create("packed_dev");
  tcase_add_test(tc, cpu_copy);
  tcase_add_test(tc, cuda_copy);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}

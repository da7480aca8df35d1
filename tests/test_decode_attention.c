/* CPU decode attention (host/backend/cpu/decode_attention.c) against a naive double-precision
 * softmax written here, on odd shapes: T around the op's 64-key chunk (1, 63, 64, 65, 200, and
 * the whole cache), GQA / MHA / MQA, large scores (scale 30: the online softmax's rescaling must
 * not overflow), B = 2 with different data per sequence. Also: the op equals the last row of the
 * causal attention_fwd over the same T keys (the prefill / decode hand-off), results do not depend
 * on the thread count, and bad arguments fail naming the problem with the output untouched. And
 * the decode step's gemm at M = 1 (sgemv) against a double reference.
 * Tolerance 1e-5 normalized (F32 dots of D terms and exp within 2 ulp; the reference is double). */
#include "test_cpu_util.h"
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

static qat_backend *cpu(void) { return qat_backend_cpu(); }

typedef struct dcase {
  int B, S, Hq, Hkv, D;
} dcase;

/* out[B, Hq, D] = softmax over j < T of scale * q . k_j, times v_j (double). */
static void ref_decode(const dcase *c, int T, double scale, const float *q, const float *k,
                       const float *v, float *out) {
  const int G = c->Hq / c->Hkv;
  double *s = malloc((size_t)T * sizeof *s);
  for (int b = 0; b < c->B; b++)
    for (int h = 0; h < c->Hq; h++) {
      const float *qh = q + ((size_t)b * c->Hq + h) * c->D;
      double mx = -INFINITY;
      for (int j = 0; j < T; j++) {
        const float *kj = k + (((size_t)b * c->S + j) * c->Hkv + h / G) * c->D;
        double dot = 0;
        for (int d = 0; d < c->D; d++) dot += (double)qh[d] * kj[d];
        s[j] = scale * dot;
        if (s[j] > mx) mx = s[j];
      }
      double z = 0;
      for (int j = 0; j < T; j++) z += exp(s[j] - mx);
      for (int d = 0; d < c->D; d++) {
        double a = 0;
        for (int j = 0; j < T; j++)
          a += exp(s[j] - mx) / z * v[(((size_t)b * c->S + j) * c->Hkv + h / G) * c->D + d];
        out[((size_t)b * c->Hq + h) * c->D + d] = (float)a;
      }
    }
  free(s);
}

static float *randv(tu_rng *r, size_t n) {
  float *p = malloc(n * sizeof *p);
  ck_assert_ptr_nonnull(p);
  tu_fill_normal(r, p, n, 1.0f);
  return p;
}

static void check_case(dcase c, int T, float scale) {
  tu_rng r = {(uint64_t)(c.S * 131 + T * 7 + c.Hq)};
  size_t nq = (size_t)c.B * c.Hq * c.D, nk = (size_t)c.B * c.S * c.Hkv * c.D;
  float *q = randv(&r, nq), *k = randv(&r, nk), *v = randv(&r, nk);
  float *out = calloc(nq, sizeof *out), *ref = calloc(nq, sizeof *ref);
  qat_tensor tq = qat_view(q, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){c.B, c.Hq, c.D});
  qat_tensor to = qat_view(out, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){c.B, c.Hq, c.D});
  qat_tensor tk = qat_view(k, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){c.B, c.S, c.Hkv, c.D});
  qat_tensor tv = qat_view(v, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){c.B, c.S, c.Hkv, c.D});
  TU_REQUIRE_OK(cpu()->attention_decode(cpu(), &tq, &tk, &tv, T, scale, &to));
  ref_decode(&c, T, scale, q, k, v, ref);
  double e = tu_nerr(out, ref, nq);
  ck_assert_msg(e < TOL, "B %d S %d Hq %d Hkv %d D %d T %d scale %g: nerr %.3g", c.B, c.S, c.Hq,
                c.Hkv, c.D, T, scale, e);
  free(q), free(k), free(v), free(out), free(ref);
}

START_TEST(test_decode_vs_reference) {
  const int Ts[] = {1, 63, 64, 65, 200, 301};
  for (int i = 0; i < 6; i++) {
    check_case((dcase){2, 301, 6, 2, 12}, Ts[i], 1.0f / sqrtf(12.0f)); /* GQA */
    check_case((dcase){1, 301, 3, 3, 64}, Ts[i], 0.125f);              /* MHA */
    check_case((dcase){2, 301, 4, 1, 5}, Ts[i], 0.5f);                 /* MQA, odd D */
  }
}
END_TEST

START_TEST(test_decode_large_scores) {
  check_case((dcase){1, 300, 4, 2, 16}, 300, 30.0f);
  check_case((dcase){2, 130, 2, 1, 8}, 129, -25.0f);
}
END_TEST

/* Decode of position T-1 over keys [0, T) is the last row of causal attention over those keys. */
START_TEST(test_decode_is_last_row_of_attention_fwd) {
  const int B = 2, T = 77, Hq = 6, Hkv = 3, D = 16;
  const float sc = 0.25f;
  tu_rng r = {99};
  size_t nq = (size_t)B * T * Hq * D, nk = (size_t)B * T * Hkv * D;
  float *q = randv(&r, nq), *k = randv(&r, nk), *v = randv(&r, nk);
  float *o = calloc(nq, sizeof *o), *lse = calloc((size_t)B * Hq * T, sizeof *lse);
  float *qd = malloc((size_t)B * Hq * D * sizeof *qd), *od = calloc((size_t)B * Hq * D, 4);
  float *want = malloc((size_t)B * Hq * D * sizeof *want);
  for (int b = 0; b < B; b++) {
    memcpy(qd + (size_t)b * Hq * D, q + ((size_t)b * T + T - 1) * Hq * D, (size_t)Hq * D * 4);
  }
  qat_tensor tq = qat_view(q, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){B, T, Hq, D});
  qat_tensor tk = qat_view(k, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){B, T, Hkv, D});
  qat_tensor tv = qat_view(v, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){B, T, Hkv, D});
  qat_tensor to = qat_view(o, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){B, T, Hq, D});
  qat_tensor tl = qat_view(lse, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){B, Hq, T});
  TU_REQUIRE_OK(cpu()->attention_fwd(cpu(), &tq, &tk, &tv, sc, &to, &tl));
  for (int b = 0; b < B; b++)
    memcpy(want + (size_t)b * Hq * D, o + ((size_t)b * T + T - 1) * Hq * D, (size_t)Hq * D * 4);
  qat_tensor tqd = qat_view(qd, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){B, Hq, D});
  qat_tensor tod = qat_view(od, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){B, Hq, D});
  TU_REQUIRE_OK(cpu()->attention_decode(cpu(), &tqd, &tk, &tv, T, sc, &tod));
  double e = tu_nerr(od, want, (size_t)B * Hq * D);
  ck_assert_msg(e < TOL, "decode vs attention_fwd last row: nerr %.3g", e);
  free(q), free(k), free(v), free(o), free(lse), free(qd), free(od), free(want);
}
END_TEST

/* Big enough to run threaded (B * Hq * T * D > 2^20): same bits with 1 and 2 threads. */
START_TEST(test_decode_deterministic) {
  const int B = 2, S = 2100, Hq = 8, Hkv = 2, D = 64, T = 2050;
  tu_rng r = {5};
  size_t nq = (size_t)B * Hq * D, nk = (size_t)B * S * Hkv * D;
  float *q = randv(&r, nq), *k = randv(&r, nk), *v = randv(&r, nk);
  float *o1 = calloc(nq, 4), *o2 = calloc(nq, 4);
  qat_tensor tq = qat_view(q, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){B, Hq, D});
  qat_tensor tk = qat_view(k, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){B, S, Hkv, D});
  qat_tensor tv = qat_view(v, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){B, S, Hkv, D});
  qat_tensor t1 = qat_view(o1, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){B, Hq, D});
  qat_tensor t2 = qat_view(o2, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){B, Hq, D});
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  TU_REQUIRE_OK(cpu()->attention_decode(cpu(), &tq, &tk, &tv, T, 0.125f, &t1));
  omp_set_num_threads(2);
  TU_REQUIRE_OK(cpu()->attention_decode(cpu(), &tq, &tk, &tv, T, 0.125f, &t2));
  omp_set_num_threads(saved);
  ck_assert(memcmp(o1, o2, nq * 4) == 0);
  float *ref = calloc(nq, 4);
  ref_decode(&(dcase){B, S, Hq, Hkv, D}, T, 0.125, q, k, v, ref);
  ck_assert_double_lt(tu_nerr(o1, ref, nq), TOL);
  free(q), free(k), free(v), free(o1), free(o2), free(ref);
}
END_TEST

START_TEST(test_decode_bad_args) {
  float buf[4096] = {0}, out[256];
  for (int i = 0; i < 256; i++) out[i] = 7.0f;
  qat_tensor q = qat_view(buf, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){1, 4, 8});
  qat_tensor o = qat_view(out, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){1, 4, 8});
  qat_tensor k = qat_view(buf, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){1, 10, 2, 8});
  qat_tensor k3 = qat_view(buf, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){1, 10, 3, 8});
  qat_tensor kd = qat_view(buf, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){1, 10, 2, 6});
  qat_tensor v9 = qat_view(buf, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){1, 9, 2, 8});
  qat_tensor q4 = qat_view(buf, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){1, 1, 4, 8});
  qat_tensor qb = qat_view(buf, QAT_BF16, QAT_DEV_CPU, 3, (int64_t[]){1, 4, 8});
  const qat_backend *b = cpu();
  CK_FAILS(b->attention_decode(b, &q, &k, &k, 0, 1.0f, &o), QAT_EINVAL, "T = 0 keys");
  CK_FAILS(b->attention_decode(b, &q, &k, &k, 11, 1.0f, &o), QAT_EINVAL, "outside the cache");
  CK_FAILS(b->attention_decode(b, &q, &k3, &k3, 3, 1.0f, &o), QAT_EINVAL, "not a multiple");
  CK_FAILS(b->attention_decode(b, &q, &kd, &kd, 3, 1.0f, &o), QAT_EINVAL, "disagree on B or D");
  CK_FAILS(b->attention_decode(b, &q, &k, &v9, 3, 1.0f, &o), QAT_EINVAL, "does not match");
  CK_FAILS(b->attention_decode(b, &q4, &k, &k, 3, 1.0f, &o), QAT_EINVAL, "[B, Hq, D]");
  CK_FAILS(b->attention_decode(b, &qb, &k, &k, 3, 1.0f, &o), QAT_EUNSUPPORTED, "BF16");
  CK_FAILS(b->attention_decode(b, &q, &k, &k, 3, NAN, &o), QAT_EINVAL, "not finite");
  for (int i = 0; i < 256; i++) ck_assert_float_eq(out[i], 7.0f);
}
END_TEST

/* The decode step's other CPU path: gemm at M = 1 goes through sgemv (host/backend/cpu/gemm.c).
 * Every transpose, alpha, beta in {0, 1, -0.3}; beta = 0 must ignore C (NaN there). */
START_TEST(test_gemm_m1_is_gemv) {
  const int64_t N = 37, K = 53;
  const float betas[3] = {0.0f, 1.0f, -0.3f};
  tu_rng r = {17};
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int bi = 0; bi < 3; bi++) {
        float *A = randv(&r, (size_t)K), *B = randv(&r, (size_t)(K * N)), *C = randv(&r, (size_t)N);
        float ref[37];
        if (betas[bi] == 0.0f)
          for (int j = 0; j < N; j++) C[j] = NAN;
        for (int64_t j = 0; j < N; j++) {
          double acc = 0;
          for (int64_t p = 0; p < K; p++) acc += (double)A[p] * (tb ? B[j * K + p] : B[p * N + j]);
          ref[j] = (float)(0.7 * acc + (betas[bi] == 0.0f ? 0.0 : betas[bi] * (double)C[j]));
        }
        qat_tensor tA = ta ? qat_view2(A, QAT_F32, QAT_DEV_CPU, K, 1) : qat_view2(A, QAT_F32, QAT_DEV_CPU, 1, K);
        qat_tensor tB = tb ? qat_view2(B, QAT_F32, QAT_DEV_CPU, N, K) : qat_view2(B, QAT_F32, QAT_DEV_CPU, K, N);
        qat_tensor tC = qat_view2(C, QAT_F32, QAT_DEV_CPU, 1, N);
        TU_REQUIRE_OK(cpu()->gemm(cpu(), ta, tb, 1, N, K, 0.7f, &tA, &tB, betas[bi], &tC));
        double e = tu_nerr(C, ref, (size_t)N);
        ck_assert_msg(e < TOL, "ta %d tb %d beta %g: nerr %.3g", ta, tb, betas[bi], e);
        free(A), free(B), free(C);
      }
}
END_TEST

int main(void) {
  Suite *s = suite_create("decode_attention");
  TCase *tc = tcase_create("decode_attention");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_decode_vs_reference);
  tcase_add_test(tc, test_decode_large_scores);
  tcase_add_test(tc, test_decode_is_last_row_of_attention_fwd);
  tcase_add_test(tc, test_decode_deterministic);
  tcase_add_test(tc, test_decode_bad_args);
  tcase_add_test(tc, test_gemm_m1_is_gemv);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}

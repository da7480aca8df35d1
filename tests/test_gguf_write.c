/* GGUF export building blocks: the writer (io/gguf_write.h) and qat's grid as GGUF blocks
 * (quant/packed_gguf.h).
 * - Writer: every metadata type the export uses, read back by the independent-of-it reader
 *   (io/gguf.c, validated by test_gguf against llama.cpp's gguf package): values, tensor dims,
 *   types, 32-byte aligned offsets and bytes; duplicate keys / tensors, wrong byte counts and
 *   partial blocks refused; a failed write leaves no file.
 * - Blocks: fake-quant grids from the CPU quantizer ops (fq_init / fq_forward / fq_codes) at
 *   bits 2..8, sym and asym, groups 32 / 64 / per-channel, packed with F32 and F16 scales, turned
 *   into Q4_0 / Q4_1 / Q8_0 and dequantized by qat_gguf_dequant (bit-exact with
 *   gguf.quants.dequantize): F16 scales give the fake-quant weights exactly for Q4_0 / Q8_0, and
 *   in every case the largest |difference| equals the reported max_err; rows come out in the
 *   order asked for. Refusals: 8-bit asym, groups not a multiple of 32, an F16 overflow of m. */
#include "testutil.h"

#include "io/fsutil.h"
#include "io/gguf.h"
#include "io/gguf_write.h"
#include "quant/packed_gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(writer_roundtrip) {
  qat_gguf_writer w;
  TU_REQUIRE_OK(qat_gguf_writer_init(&w));
  TU_REQUIRE_OK(qat_gguf_w_str(&w, "general.architecture", "llama"));
  TU_REQUIRE_OK(qat_gguf_w_str(&w, "s.empty", ""));
  TU_REQUIRE_OK(qat_gguf_w_u32(&w, "u", 4000000000u));
  TU_REQUIRE_OK(qat_gguf_w_i32(&w, "i", -7));
  TU_REQUIRE_OK(qat_gguf_w_f32(&w, "f", 1e-5f));
  TU_REQUIRE_OK(qat_gguf_w_bool(&w, "b", 1));
  const char *strs[3] = {"\xe2\x96\x81the", "", "a b"};
  TU_REQUIRE_OK(qat_gguf_w_arr_str(&w, "as", strs, NULL, 3));
  const float fs[4] = {0, -1.5f, 3e38f, 1e-30f};
  TU_REQUIRE_OK(qat_gguf_w_arr_f32(&w, "af", fs, 4));
  const int32_t is[2] = {-2147483647 - 1, 6};
  TU_REQUIRE_OK(qat_gguf_w_arr_i32(&w, "ai", is, 2));
  ck_assert_int_eq(qat_gguf_w_u32(&w, "u", 1), QAT_EINVAL);
  float a[5] = {1, 2, 3, 4, 5};
  uint8_t q[3 * 2 * 18];
  for (size_t i = 0; i < sizeof q; i++) q[i] = (uint8_t)(i * 37 + 1);
  int64_t ne1[1] = {5}, ne2[2] = {64, 3};
  TU_REQUIRE_OK(qat_gguf_w_tensor(&w, "a", QAT_GGML_F32, 1, ne1, a, sizeof a));
  TU_REQUIRE_OK(qat_gguf_w_tensor(&w, "q", QAT_GGML_Q4_0, 2, ne2, q, sizeof q));
  ck_assert_int_eq(qat_gguf_w_tensor(&w, "a", QAT_GGML_F32, 1, ne1, a, sizeof a), QAT_EINVAL);
  ck_assert_int_eq(qat_gguf_w_tensor(&w, "x", QAT_GGML_F32, 1, ne1, a, 16), QAT_EINVAL);
  int64_t bad[2] = {48, 1};
  ck_assert_int_eq(qat_gguf_w_tensor(&w, "y", QAT_GGML_Q4_0, 2, bad, q, 18), QAT_EINVAL);
  const char *path = tu_dir_path("w.gguf");
  TU_REQUIRE_OK(qat_gguf_write(&w, path));
  qat_gguf_writer_free(&w);

  qat_gguf_file f;
  TU_REQUIRE_OK(qat_gguf_open(path, &f));
  ck_assert_int_eq(f.version, 3);
  ck_assert_int_eq(f.alignment, 32);
  ck_assert_int_eq(f.n_kv, 10);
  char *s = NULL;
  int found = 0;
  TU_REQUIRE_OK(qat_gguf_get_str(&f, "general.architecture", &s, &found));
  ck_assert(found && !strcmp(s, "llama"));
  free(s);
  TU_REQUIRE_OK(qat_gguf_get_str(&f, "s.empty", &s, &found));
  ck_assert(found && !strcmp(s, ""));
  free(s);
  int64_t v;
  TU_REQUIRE_OK(qat_gguf_get_int(&f, "u", &v, &found));
  ck_assert(found && v == 4000000000LL && qat_gguf_find(&f, "u")->v.type == QAT_GGUF_U32);
  TU_REQUIRE_OK(qat_gguf_get_int(&f, "i", &v, &found));
  ck_assert(found && v == -7 && qat_gguf_find(&f, "i")->v.type == QAT_GGUF_I32);
  double d;
  TU_REQUIRE_OK(qat_gguf_get_float(&f, "f", &d, &found));
  ck_assert(found && (float)d == 1e-5f && qat_gguf_find(&f, "f")->v.type == QAT_GGUF_F32);
  int bv = 0;
  TU_REQUIRE_OK(qat_gguf_get_bool(&f, "b", &bv, &found));
  ck_assert(found && bv == 1);
  const qat_gguf_value *arr;
  TU_REQUIRE_OK(qat_gguf_get_array(&f, "as", QAT_GGUF_STRING, &arr));
  ck_assert(arr && arr->count == 3);
  for (int k = 0; k < 3; k++) {
    const char *p;
    uint64_t n;
    qat_gguf_arr_str(arr, (uint64_t)k, &p, &n);
    ck_assert(n == strlen(strs[k]) && !memcmp(p, strs[k], n));
  }
  TU_REQUIRE_OK(qat_gguf_get_array(&f, "af", QAT_GGUF_F32, &arr));
  for (int k = 0; k < 4; k++) ck_assert((float)qat_gguf_arr_f64(arr, (uint64_t)k) == fs[k]);
  TU_REQUIRE_OK(qat_gguf_get_array(&f, "ai", QAT_GGUF_I32, &arr));
  for (int k = 0; k < 2; k++) ck_assert(qat_gguf_arr_i64(arr, (uint64_t)k) == is[k]);
  ck_assert_int_eq(f.n_tensors, 2);
  const qat_gguf_tensor *ta = qat_gguf_find_tensor(&f, "a"), *tq = qat_gguf_find_tensor(&f, "q");
  ck_assert(ta && ta->type == QAT_GGML_F32 && ta->ndim == 1 && ta->ne[0] == 5);
  ck_assert(tq && tq->type == QAT_GGML_Q4_0 && tq->ndim == 2 && tq->ne[0] == 64 && tq->ne[1] == 3);
  ck_assert(ta->offset % 32 == 0 && tq->offset % 32 == 0 && tq->offset >= 20);
  ck_assert(!memcmp(ta->data, a, sizeof a) && !memcmp(tq->data, q, sizeof q));
  qat_gguf_close(&f);

  /* a write that cannot happen leaves nothing */
  TU_REQUIRE_OK(qat_gguf_writer_init(&w));
  ck_assert_int_ne(qat_gguf_write(&w, tu_dir_path("no/such/dir/x.gguf")), QAT_OK);
  qat_gguf_writer_free(&w);
  ck_assert(!qat_path_exists(tu_dir_path("no")));
}
END_TEST

/* fake-quant of a random W[N, K] on the CPU backend: codes, raw s and z, w_hat */
typedef struct grid {
  qat_qspec q;
  int64_t N, K, G;
  float *w, *s, *z, *wh;
  uint8_t *codes;
} grid;

static void grid_make(grid *g, int bits, int group, int sym, int64_t N, int64_t K, uint64_t seed) {
  qat_backend *be = qat_backend_cpu();
  tu_rng r = {seed};
  g->q = (qat_qspec){.bits = bits, .group = group, .sym = sym, .grad = QAT_QGRAD_STE};
  g->N = N;
  g->K = K;
  g->G = qat_qspec_groups(&g->q, K);
  g->w = malloc(sizeof(float) * (size_t)(N * K));
  g->wh = malloc(sizeof(float) * (size_t)(N * K));
  g->codes = malloc((size_t)(N * K));
  g->s = malloc(sizeof(float) * (size_t)(N * g->G));
  g->z = malloc(sizeof(float) * (size_t)(N * g->G));
  tu_fill_normal(&r, g->w, (size_t)(N * K), 0.05f);
  qat_tensor tw = qat_view2(g->w, QAT_F32, QAT_DEV_CPU, N, K);
  qat_tensor twh = qat_view2(g->wh, QAT_F32, QAT_DEV_CPU, N, K);
  qat_tensor tc = qat_view2(g->codes, QAT_U8, QAT_DEV_CPU, N, K);
  qat_tensor ts = qat_view2(g->s, QAT_F32, QAT_DEV_CPU, N, g->G);
  qat_tensor tz = qat_view2(g->z, QAT_F32, QAT_DEV_CPU, N, g->G);
  qat_tensor *pz = sym ? NULL : &tz;
  TU_REQUIRE_OK(QAT_OP(be, fq_init, &g->q, &tw, &ts, pz));
  TU_REQUIRE_OK(QAT_OP(be, fq_forward, &g->q, &tw, &ts, pz, &twh));
  TU_REQUIRE_OK(QAT_OP(be, fq_codes, &g->q, &tw, &ts, pz, &tc));
}

static void grid_free(grid *g) {
  free(g->w);
  free(g->wh);
  free(g->codes);
  free(g->s);
  free(g->z);
}

static uint32_t want_type(int bits, int sym) {
  if (bits <= 3 || (bits == 4 && sym)) return QAT_GGML_Q4_0;
  return bits == 4 ? QAT_GGML_Q4_1 : QAT_GGML_Q8_0;
}

START_TEST(blocks_vs_dequant) {
  const int64_t N = 5;
  const int64_t gk[3][2] = {{32, 96}, {64, 128}, {-1, 96}}; /* group, K */
  int ncase = 0;
  for (int bits = 2; bits <= 8; bits++)
    for (int sym = 0; sym <= 1; sym++)
      for (int gi = 0; gi < 3; gi++) {
        if (bits == 8 && !sym) continue;
        const int group = (int)gk[gi][0];
        const int64_t KK = gk[gi][1];
        grid g;
        grid_make(&g, bits, group, sym, N, KK, 100 + (uint64_t)ncase);
        for (int sdt = 0; sdt < 2; sdt++) {
          qat_packed p;
          TU_REQUIRE_OK(qat_packed_alloc(&p, &g.q, N, KK, sdt ? QAT_F16 : QAT_F32, "w"));
          TU_REQUIRE_OK(qat_packed_pack(&p, g.codes, g.s, sym ? NULL : g.z, "w"));
          /* the reference weights: the packed grid (F16-rounded s when sdt) */
          float *ref = malloc(sizeof(float) * (size_t)(N * KK));
          qat_packed_dequant(&p, 0, N, ref);
          if (!sdt) ck_assert(!memcmp(ref, g.wh, sizeof(float) * (size_t)(N * KK)));
          uint32_t type;
          TU_REQUIRE_OK(qat_gguf_qtype(bits, sym, p.group, KK, "w", &type));
          ck_assert_int_eq(type, want_type(bits, sym));
          int64_t rows[5] = {4, 0, 3, 1, 2};
          size_t bsz = (size_t)qat_ggml_type_bytes(type), nb = (size_t)(N * KK / 32) * bsz;
          void *blk = malloc(nb);
          float *back = malloc(sizeof(float) * (size_t)(N * KK));
          double err = -1;
          TU_REQUIRE_OK(qat_packed_to_gguf(&p, rows, type, blk, &err, "w"));
          TU_REQUIRE_OK(qat_gguf_dequant(type, blk, N * KK, back));
          double worst = 0;
          for (int64_t r = 0; r < N; r++)
            for (int64_t k = 0; k < KK; k++) {
              double e = fabs((double)back[r * KK + k] - (double)ref[rows[r] * KK + k]);
              if (e > worst) worst = e;
            }
          ck_assert_msg(worst == err, "W%d %s g%d %s: max |diff| %g, reported %g", bits,
                        sym ? "sym" : "asym", group, sdt ? "F16" : "F32", worst, err);
          if (sdt && type != QAT_GGML_Q4_1)
            ck_assert_msg(err == 0, "W%d %s g%d F16 scales: %g, want exact", bits,
                          sym ? "sym" : "asym", group, err);
          if (!sdt && err == 0) /* random F32 scales round in F16 somewhere */
            ck_abort_msg("W%d %s g%d F32: no rounding reported", bits, sym ? "sym" : "asym", group);
          free(blk);
          free(back);
          free(ref);
          qat_packed_free(&p);
        }
        grid_free(&g);
        ncase++;
      }
  ck_assert_int_eq(ncase, 39);
}
END_TEST

START_TEST(refusals) {
  uint32_t t;
  ck_assert_int_eq(qat_gguf_qtype(8, 0, 32, 64, "w", &t), QAT_EUNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "8-bit asymmetric"));
  ck_assert_int_eq(qat_gguf_qtype(4, 1, 16, 64, "w", &t), QAT_EUNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "multiple of 32"));
  ck_assert_int_eq(qat_gguf_qtype(4, 1, 48, 48, "w", &t), QAT_EUNSUPPORTED);
  ck_assert_int_eq(qat_gguf_qtype(4, 1, 32, 48, "w", &t), QAT_EUNSUPPORTED);
  ck_assert_int_eq(qat_gguf_qtype(4, 1, 0, 64, "w", &t), QAT_EUNSUPPORTED);
  /* m = -s * z = -1e4 * 15 overflows F16 */
  qat_qspec q = {.bits = 4, .group = 32, .sym = 0};
  qat_packed p;
  TU_REQUIRE_OK(qat_packed_alloc(&p, &q, 1, 32, QAT_F32, "w"));
  uint8_t codes[32] = {0};
  float s = 1e4f, z = 15;
  TU_REQUIRE_OK(qat_packed_pack(&p, codes, &s, &z, "w"));
  qat_block_q4_1 b;
  double err;
  ck_assert_int_eq(qat_packed_to_gguf(&p, NULL, QAT_GGML_Q4_1, &b, &err, "w"), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "overflows F16"));
  ck_assert_int_eq(qat_packed_to_gguf(&p, NULL, QAT_GGML_Q4_0, &b, &err, "w"), QAT_EINVAL);
  qat_packed_free(&p);
}
END_TEST

int main(void) {
  Suite *s = suite_create("gguf_write");
  TCase *tc = tcase_create("gguf_write");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
  tcase_add_test(tc, writer_roundtrip);
  tcase_add_test(tc, blocks_vs_dequant);
  tcase_add_test(tc, refusals);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}

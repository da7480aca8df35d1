/* Packed low-bit weights (host/quant/packed.c, layout quant/packed_layout.h).
 * - Against the fake-quant grid qat already produces (REFERENCE.md section 1, the CPU fq_init /
 *   fq_forward / fq_codes ops, independent of the packing code): pack(fq_codes(w), s, z) with F32
 *   scales unpacks to the same codes, s~ and z~, and dequantizes to fq_forward(w) bit for bit;
 *   with F16 scales to dq_forward(codes) on the F16-rounded s, bit for bit. Bits 2..8, sym and
 *   asym, groups 32 / 64 / 128 and per-channel (odd K = 100), odd N.
 * - The bit layout against an independent writer: a uint64 accumulator that places code k at bit
 *   b*k of the row (REFERENCE.md section 10's LSB-first order; 3-bit codes 10 and 21 straddle
 *   32-bit words), compared byte for byte.
 * - Guards: zero, negative and NaN scales, codes past 2^b, group not dividing K, per-tensor.
 * - safetensors: written and read back identical; bad metadata refused naming the file.
 * - bits per weight equal qat_quant_bpw's count where no word padding applies. */
#include "testutil.h"

#include "io/safetensors.h"
#include "quant/packed.h"
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct grid {
  qat_qspec q;
  int64_t N, K, G;
  float *w, *s, *z, *wh;
  uint8_t *codes;
} grid;

/* fake-quant of a random W[N, K] on the CPU backend */
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
  if (sym) memset(g->z, 0, sizeof(float) * (size_t)(N * g->G));
}

static void grid_free(grid *g) {
  free(g->w);
  free(g->wh);
  free(g->codes);
  free(g->s);
  free(g->z);
}

static const int k_groups[] = {32, 64, 128, -1};

START_TEST(roundtrip_grid) {
  qat_backend *be = qat_backend_cpu();
  for (int bits = 2; bits <= 8; bits++)
    for (int sym = 0; sym <= 1; sym++)
      for (int gi = 0; gi < 4; gi++) {
        int group = k_groups[gi];
        int64_t N = 37, K = group > 0 ? 3 * 128 : 100;
        grid g;
        grid_make(&g, bits, group, sym, N, K, 1000u + (unsigned)(bits * 10 + sym * 5 + gi));
        for (int f16 = 0; f16 <= 1; f16++) {
          qat_packed p;
          TU_REQUIRE_OK(qat_packed_alloc(&p, &g.q, N, K, f16 ? QAT_F16 : QAT_F32, "w"));
          TU_REQUIRE_OK(qat_packed_pack(&p, g.codes, g.s, sym ? NULL : g.z, "w"));
          uint8_t *c2 = malloc((size_t)(N * K));
          float *s2 = malloc(sizeof(float) * (size_t)(N * g.G));
          float *z2 = malloc(sizeof(float) * (size_t)(N * g.G));
          float *w2 = malloc(sizeof(float) * (size_t)(N * K));
          float *wref = malloc(sizeof(float) * (size_t)(N * K));
          qat_packed_unpack(&p, c2, s2, z2);
          ck_assert_msg(memcmp(c2, g.codes, (size_t)(N * K)) == 0, "codes b%d sym%d g%d", bits,
                        sym, group);
          for (int64_t i = 0; i < N * g.G; i++) {
            float se = fminf(fmaxf(g.s[i], QAT_S_MIN), QAT_S_MAX);
            if (f16) se = qat_f16_to_f32(qat_f32_to_f16(se));
            ck_assert_msg(s2[i] == se, "scale %lld: %g vs %g", (long long)i, s2[i], se);
            float ze = sym ? (float)(1 << (bits - 1))
                           : fminf(fmaxf(rintf(g.z[i]), 0.0f), (float)((1 << bits) - 1));
            ck_assert_msg(z2[i] == ze, "zero %lld: %g vs %g", (long long)i, z2[i], ze);
          }
          qat_packed_dequant(&p, 0, N, w2);
          if (!f16) {
            ck_assert_msg(memcmp(w2, g.wh, sizeof(float) * (size_t)(N * K)) == 0,
                          "dequant != fq_forward: b%d sym%d g%d", bits, sym, group);
          } else { /* dq_forward of the same codes on the F16-rounded scales */
            for (int64_t i = 0; i < N * g.G; i++) s2[i] = qat_f16_to_f32(qat_f32_to_f16(
                                                        fminf(fmaxf(g.s[i], QAT_S_MIN), QAT_S_MAX)));
            qat_tensor tc = qat_view2(g.codes, QAT_U8, QAT_DEV_CPU, N, K);
            qat_tensor ts = qat_view2(s2, QAT_F32, QAT_DEV_CPU, N, g.G);
            qat_tensor tz = qat_view2(g.z, QAT_F32, QAT_DEV_CPU, N, g.G);
            qat_tensor tr = qat_view2(wref, QAT_F32, QAT_DEV_CPU, N, K);
            TU_REQUIRE_OK(QAT_OP(be, dq_forward, &g.q, &tc, &ts, sym ? NULL : &tz, &tr));
            ck_assert_msg(memcmp(w2, wref, sizeof(float) * (size_t)(N * K)) == 0,
                          "f16 dequant != dq_forward: b%d sym%d g%d", bits, sym, group);
          }
          free(c2);
          free(s2);
          free(z2);
          free(w2);
          free(wref);
          qat_packed_free(&p);
        }
        grid_free(&g);
      }
}
END_TEST

/* Independent writer: row as a little-endian bit stream built through a 64-bit accumulator. */
static void ref_stream(const uint8_t *c, int64_t n, int b, uint8_t *out, int64_t nbytes) {
  memset(out, 0, (size_t)nbytes);
  uint64_t acc = 0;
  int have = 0;
  int64_t o = 0;
  for (int64_t k = 0; k < n; k++) {
    acc |= (uint64_t)c[k] << have;
    have += b;
    while (have >= 8) {
      out[o++] = (uint8_t)acc;
      acc >>= 8;
      have -= 8;
    }
  }
  if (have > 0) out[o++] = (uint8_t)acc;
}

START_TEST(bit_layout) {
  for (int b = 2; b <= 8; b++) {
    int64_t N = 3, K = 96;
    qat_qspec q = {.bits = b, .group = 32, .sym = 0};
    qat_packed p;
    TU_REQUIRE_OK(qat_packed_alloc(&p, &q, N, K, QAT_F32, "w"));
    uint8_t c[3 * 96];
    float s[9], z[9];
    tu_rng r = {77u + (unsigned)b};
    for (int i = 0; i < 3 * 96; i++) c[i] = (uint8_t)(tu_next(&r) % (1u << b));
    for (int i = 0; i < 9; i++) {
      s[i] = 0.01f * (float)(i + 1);
      z[i] = (float)(i % (1 << b));
    }
    TU_REQUIRE_OK(qat_packed_pack(&p, c, s, z, "w"));
    ck_assert_int_eq(p.row_bytes, (96 * b + 31) / 32 * 4);
    uint8_t ref[128];
    for (int64_t n = 0; n < N; n++) {
      ref_stream(c + n * K, K, b, ref, p.row_bytes);
      ck_assert_msg(memcmp(ref, p.codes + n * p.row_bytes, (size_t)p.row_bytes) == 0,
                    "row %lld bits %d", (long long)n, b);
      uint8_t zc[3];
      for (int j = 0; j < 3; j++) zc[j] = (uint8_t)z[n * 3 + j];
      ref_stream(zc, 3, b, ref, p.zrow_bytes);
      ck_assert(memcmp(ref, p.zeros + n * p.zrow_bytes, (size_t)p.zrow_bytes) == 0);
    }
    if (b == 3) { /* GPTQ's 96-bit stream: code 10 straddles words 0 and 1 */
      uint32_t w0, w1;
      memcpy(&w0, p.codes, 4);
      memcpy(&w1, p.codes + 4, 4);
      unsigned c10 = ((w0 >> 30) | (w1 << 2)) & 7u;
      ck_assert_uint_eq(c10, c[10]);
    }
    if (b == 4) ck_assert_uint_eq(p.codes[0], (unsigned)(c[0] | c[1] << 4));
    qat_packed_free(&p);
  }
}
END_TEST

START_TEST(guards) {
  qat_qspec q = {.bits = 4, .group = 32, .sym = 0};
  qat_packed p;
  uint8_t c[64] = {0};
  float s[2] = {0.1f, 0.1f}, z[2] = {3, 3};
  TU_REQUIRE_OK(qat_packed_alloc(&p, &q, 1, 64, QAT_F16, "layer.w"));
  float bad[] = {0.0f, -0.5f, NAN, INFINITY};
  for (int i = 0; i < 4; i++) {
    s[1] = bad[i];
    ck_assert_int_eq(qat_packed_pack(&p, c, s, z, "layer.w"), QAT_EINVAL);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "layer.w"));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "[0, 1]"));
  }
  s[1] = 0.1f;
  c[5] = 16;
  ck_assert_int_eq(qat_packed_pack(&p, c, s, z, "layer.w"), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "exceeds 4 bits"));
  c[5] = 15;
  ck_assert_int_eq(qat_packed_pack(&p, c, s, NULL, "layer.w"), QAT_EINVAL); /* asym, no z */
  TU_REQUIRE_OK(qat_packed_pack(&p, c, s, z, "layer.w"));
  qat_packed_free(&p);
  qat_qspec bq = q;
  bq.group = 48;
  ck_assert_int_eq(qat_packed_alloc(&p, &bq, 2, 64, QAT_F16, "x"), QAT_EUNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "does not divide"));
  bq.group = 0;
  ck_assert_int_eq(qat_packed_alloc(&p, &bq, 2, 64, QAT_F16, "x"), QAT_EUNSUPPORTED);
  bq.group = 32;
  ck_assert_int_eq(qat_packed_alloc(&p, &bq, 2, 64, QAT_BF16, "x"), QAT_EUNSUPPORTED);
  bq.bits = 1;
  ck_assert_int_eq(qat_packed_alloc(&p, &bq, 2, 64, QAT_F16, "x"), QAT_EUNSUPPORTED);
}
END_TEST

static void write_one(const char *path, const char *base, const qat_packed *p, const char *meta) {
  qat_st_writer w;
  qat_st_writer_init(&w);
  char m[256];
  TU_REQUIRE_OK(qat_packed_st_add(&w, base, p));
  TU_REQUIRE_OK(qat_st_writer_meta(&w, "qat_packed", meta ? meta : qat_packed_meta(&(qat_qspec){.bits = p->bits, .group = p->group == p->K ? -1 : p->group, .sym = p->sym}, (qat_dtype)p->sdtype, m, sizeof m)));
  TU_REQUIRE_OK(qat_st_write(&w, path));
  qat_st_writer_free(&w);
}

START_TEST(safetensors_roundtrip) {
  const int cases[][3] = {{4, 128, 0}, {3, -1, 0}, {2, 64, 1}, {8, 32, 0}};
  for (int ci = 0; ci < 4; ci++) {
    grid g;
    int64_t K = cases[ci][1] > 0 ? 256 : 100;
    grid_make(&g, cases[ci][0], cases[ci][1], cases[ci][2], 19, K, 5u + (unsigned)ci);
    qat_packed p, r;
    TU_REQUIRE_OK(qat_packed_alloc(&p, &g.q, 19, K, ci % 2 ? QAT_F32 : QAT_F16, "w"));
    TU_REQUIRE_OK(qat_packed_pack(&p, g.codes, g.s, g.z, "w"));
    const char *path = tu_dir_path("p.safetensors");
    write_one(path, "model.layers.0.mlp.up_proj", &p, NULL);
    qat_st_file f;
    TU_REQUIRE_OK(qat_st_open(path, &f));
    ck_assert(qat_packed_st_is_packed(&f));
    TU_REQUIRE_OK(qat_packed_st_read(&f, "model.layers.0.mlp.up_proj", &r));
    ck_assert_int_eq(r.bits, p.bits);
    ck_assert_int_eq(r.group, p.group);
    ck_assert_int_eq(r.sym, p.sym);
    ck_assert_int_eq(r.K, K);
    ck_assert_int_eq(r.sdtype, p.sdtype);
    ck_assert(memcmp(r.codes, p.codes, (size_t)(p.N * p.row_bytes)) == 0);
    ck_assert(memcmp(r.scales, p.scales, (size_t)(p.N * p.G * (p.sdtype == QAT_F16 ? 2 : 4))) == 0);
    if (!p.sym) ck_assert(memcmp(r.zeros, p.zeros, (size_t)(p.N * p.zrow_bytes)) == 0);
    qat_packed_free(&r); /* before r is reused: a failed read leaves it empty */
    ck_assert_int_eq(qat_packed_st_read(&f, "model.layers.1.mlp.up_proj", &r), QAT_EFORMAT);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "p.safetensors"));
    qat_st_close(&f);
    /* bad metadata: wrong version, missing fields */
    const char *bad[] = {"{\"version\": 2, \"bits\": 4, \"group\": 32, \"sym\": false, \"scale_dtype\": \"F16\", "
                         "\"layout\": \"lsb-stream-u32\"}",
                         "{\"bits\": 4}", "not json"};
    for (int b = 0; b < 3; b++) {
      write_one(path, "m", &p, bad[b]);
      TU_REQUIRE_OK(qat_st_open(path, &f));
      qat_status st = qat_packed_st_read(&f, "m", &r);
      ck_assert_msg(st == QAT_EFORMAT || st == QAT_EUNSUPPORTED, "bad meta %d: %d", b, st);
      ck_assert_ptr_nonnull(strstr(qat_last_error(), "p.safetensors"));
      qat_st_close(&f);
    }
    qat_packed_free(&p);
    grid_free(&g);
  }
}
END_TEST

START_TEST(bits_per_weight) {
  const int cases[][3] = {{4, 128, 0}, {2, 64, 0}, {3, 128, 1}, {8, 32, 0}, {4, -1, 1}};
  for (int i = 0; i < 5; i++) {
    qat_qspec q = {.bits = cases[i][0], .group = cases[i][1], .sym = cases[i][2]};
    qat_packed p;
    TU_REQUIRE_OK(qat_packed_alloc(&p, &q, 64, 4096, QAT_F16, "w"));
    ck_assert_msg(fabs(qat_packed_bpw(&p) - qat_quant_bpw(&q, 64, 4096)) < 1e-12,
                  "bpw %g vs %g", qat_packed_bpw(&p), qat_quant_bpw(&q, 64, 4096));
    qat_packed_free(&p);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("packed");
  TCase *tc = tcase_create("packed");
  tcase_set_timeout(tc, 120);
  tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
  tcase_add_test(tc, roundtrip_grid);
  tcase_add_test(tc, bit_layout);
  tcase_add_test(tc, guards);
  tcase_add_test(tc, safetensors_roundtrip);
  tcase_add_test(tc, bits_per_weight);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}

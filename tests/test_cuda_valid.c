/* CUDA convert bit for bit against the CPU convert, and the CUDA ops' argument checks against the
 * CPU twins' (same status for the same bad call). Without a GPU every case skips (exit 77).
 *
 * convert: sources are every F16 and BF16 bit pattern, and F32 patterns chosen to hit each branch
 * of the narrowing (NaN with payloads and both signs, +-Inf, F32 subnormals, F16 subnormals and
 * their rounding ties, the F16 overflow edge 65504 / 65520, the BF16 overflow edge) plus random
 * bit patterns. F16 <-> BF16: the reference is the CPU's two steps through F32 (exact, then one
 * rounding), which is also what the CPU op does in one call. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qat_backend *g_gpu;

static int need_gpu(void) { return tu_need_gpu(&g_gpu); }

static qat_backend *cpu(void) { return qat_backend_cpu(); }

/* A 1-dim tensor of n elements of dt on be holding the bytes src (zeros when src is NULL). */
static qat_tensor mkraw(const qat_backend *be, qat_dtype dt, int64_t n, const void *src) {
  qat_tensor t = qat_view1(NULL, dt, be->device, n);
  size_t nb = qat_nbytes(&t);
  TU_REQUIRE_OK(be->alloc(be, &t.data, nb));
  if (src)
    TU_REQUIRE_OK(be->upload(be, t.data, src, nb));
  else
    TU_REQUIRE_OK(be->memset0(be, t.data, nb));
  return t;
}

static void *getraw(const qat_backend *be, const qat_tensor *t) {
  size_t nb = qat_nbytes(t);
  void *p = malloc(nb ? nb : 1);
  ck_assert_ptr_nonnull(p);
  TU_REQUIRE_OK(be->sync(be));
  TU_REQUIRE_OK(be->download(be, p, t->data, nb));
  return p;
}

static void del(const qat_backend *be, qat_tensor *t) {
  be->free(be, t->data);
  t->data = NULL;
}

static size_t dsize(qat_dtype dt) { return dt == QAT_F32 ? 4 : 2; }

/* CPU reference of src (bytes of dtype s) converted to dtype d: one CPU convert, or two through
 * F32 when neither side is F32. */
static void *cpu_convert(qat_dtype s, qat_dtype d, const void *src, int64_t n) {
  qat_tensor cs = mkraw(cpu(), s, n, src), cd = mkraw(cpu(), d, n, NULL);
  if (s == QAT_F32 || d == QAT_F32) {
    TU_REQUIRE_OK(QAT_OP(cpu(), convert, &cd, &cs));
  } else {
    qat_tensor mid = mkraw(cpu(), QAT_F32, n, NULL);
    TU_REQUIRE_OK(QAT_OP(cpu(), convert, &mid, &cs));
    TU_REQUIRE_OK(QAT_OP(cpu(), convert, &cd, &mid));
    del(cpu(), &mid);
  }
  void *out = getraw(cpu(), &cd);
  del(cpu(), &cs), del(cpu(), &cd);
  return out;
}

static uint32_t elem(const void *p, size_t es, int64_t i) {
  if (es == 4) return ((const uint32_t *)p)[i];
  return ((const uint16_t *)p)[i];
}

static void convert_case(qat_dtype s, qat_dtype d, const void *src, int64_t n) {
  qat_tensor gs = mkraw(g_gpu, s, n, src), gd = mkraw(g_gpu, d, n, NULL);
  TU_REQUIRE_OK(QAT_OP(g_gpu, convert, &gd, &gs));
  void *got = getraw(g_gpu, &gd), *want = cpu_convert(s, d, src, n);
  size_t es = dsize(d), ss = dsize(s);
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; i++)
    if (elem(got, es, i) != elem(want, es, i)) {
      if (first < 0) first = i;
      bad++;
    }
  printf("  convert %-4s -> %-4s %7lld values: %lld differ\n", qat_dtype_name(s), qat_dtype_name(d),
         (long long)n, (long long)bad);
  ck_assert_msg(bad == 0, "convert %s -> %s: %lld of %lld differ; first [%lld] src 0x%x: cuda 0x%x cpu 0x%x",
                qat_dtype_name(s), qat_dtype_name(d), (long long)bad, (long long)n, (long long)first,
                first >= 0 ? elem(src, ss, first) : 0, first >= 0 ? elem(got, es, first) : 0,
                first >= 0 ? elem(want, es, first) : 0);
  free(got), free(want);
  del(g_gpu, &gs), del(g_gpu, &gd);
}

START_TEST(test_convert_bits) {
  if (!need_gpu()) return;
  /* every 16-bit pattern, read as F16 and as BF16 */
  int64_t n16 = 65536;
  uint16_t *all16 = malloc(n16 * 2);
  for (int64_t i = 0; i < n16; i++) all16[i] = (uint16_t)i;
  convert_case(QAT_F16, QAT_F32, all16, n16);
  convert_case(QAT_BF16, QAT_F32, all16, n16);
  convert_case(QAT_F16, QAT_BF16, all16, n16);
  convert_case(QAT_BF16, QAT_F16, all16, n16);
  free(all16);

  /* F32 sources: edges first, then random patterns (all exponents, so NaN/Inf/subnormals too),
   * then random patterns with exponents in the F16 range and its subnormal tail */
  static const uint32_t edges[] = {
      0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, /* +-0, +-Inf */
      0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, /* quiet and signalling NaN */
      0x7fffffffu, 0xffffffffu, 0x7fa5a5a5u, 0x7f801000u, /* NaN payloads */
      0x00000001u, 0x807fffffu, 0x00400000u,              /* F32 subnormals */
      0x477fe000u, 0x477fefffu, 0x477ff000u, 0x477ff001u, /* 65504, < 65520, 65520, > 65520 */
      0x47800000u, 0x47c35000u, 0xc77ff000u,              /* 65536, 100000, -65520 */
      0x33800000u, 0x33000000u, 0x33000001u, 0x33c00000u, /* 2^-24, 2^-25 (tie), above, 1.5*2^-24 */
      0x387fc000u, 0x387fe000u, 0x38800000u, 0x387ff000u, /* F16 subnormal/normal boundary */
      0x3f800000u, 0x3f801000u, 0x3f803000u, 0x3f800fffu, /* 1 and F16 ties to even */
      0x3f808000u, 0x3f818000u, 0x3f807fffu,              /* BF16 ties to even */
      0x7f7fffffu, 0x7f7f8000u, 0x7f7f7fffu, 0xff7f8000u, /* BF16 overflow edge */
  };
  const int64_t ne = (int64_t)(sizeof edges / sizeof edges[0]), nr = 200003;
  int64_t n = ne + 2 * nr;
  uint32_t *x = malloc(n * 4);
  memcpy(x, edges, sizeof edges);
  tu_rng r = {12345};
  for (int64_t i = 0; i < nr; i++) x[ne + i] = (uint32_t)tu_next(&r);
  for (int64_t i = 0; i < nr; i++) {
    uint32_t u = (uint32_t)tu_next(&r);
    uint32_t e = 100 + (uint32_t)(tu_next(&r) % 45); /* 2^-27 .. 2^17 */
    x[ne + nr + i] = (u & 0x807fffffu) | (e << 23);
  }
  convert_case(QAT_F32, QAT_F16, x, n);
  convert_case(QAT_F32, QAT_BF16, x, n);
  free(x);
}
END_TEST

START_TEST(test_convert_args) {
  if (!need_gpu()) return;
  uint16_t v[7] = {0x3c00, 0x4000, 0, 0, 0, 0, 0};
  qat_tensor a = mkraw(g_gpu, QAT_F16, 7, v), b = mkraw(g_gpu, QAT_F32, 6, NULL);
  ck_assert_int_eq(QAT_OP(g_gpu, convert, &b, &a), QAT_EINVAL); /* numel mismatch */
  qat_tensor i8 = mkraw(g_gpu, QAT_I8, 7, NULL);
  ck_assert_int_eq(QAT_OP(g_gpu, convert, &i8, &a), QAT_EUNSUPPORTED);
  ck_assert_int_eq(QAT_OP(g_gpu, convert, &a, &i8), QAT_EUNSUPPORTED);
  qat_tensor e0 = mkraw(g_gpu, QAT_F16, 0, NULL), e1 = mkraw(g_gpu, QAT_F32, 0, NULL);
  TU_REQUIRE_OK(QAT_OP(g_gpu, convert, &e1, &e0)); /* empty: nothing to launch */
  del(g_gpu, &a), del(g_gpu, &b), del(g_gpu, &i8), del(g_gpu, &e0), del(g_gpu, &e1);
}
END_TEST

/* ---- argument checks: the same bad call gets the same status on both backends ---------------- */

/* An F32 tensor of the given shape on be, zero-filled. */
static qat_tensor mkz(const qat_backend *be, int ndim, const int64_t *shape) {
  qat_tensor t = qat_view(NULL, QAT_F32, be->device, ndim, shape);
  TU_REQUIRE_OK(be->alloc(be, &t.data, qat_nbytes(&t)));
  TU_REQUIRE_OK(be->memset0(be, t.data, qat_nbytes(&t)));
  return t;
}

static void same(const char *what, qat_status c, qat_status g, qat_status want) {
  printf("  %-52s cpu %-16s cuda %s\n", what, qat_status_name(c), qat_status_name(g));
  ck_assert_msg(c == want && g == want, "%s: cpu %s, cuda %s, expected %s", what,
                qat_status_name(c), qat_status_name(g), qat_status_name(want));
}

/* gemm(ta, tb, M, N, K) with A, B, C of the given shapes on both backends. */
static void gemm_args(const char *what, int ta, int tb, int64_t M, int64_t N, int64_t K, int na,
                      const int64_t *sa, int nb, const int64_t *sb, int nc, const int64_t *sc,
                      qat_status want) {
  qat_backend *be[2] = {cpu(), g_gpu};
  qat_status st[2];
  for (int i = 0; i < 2; i++) {
    qat_tensor A = mkz(be[i], na, sa), B = mkz(be[i], nb, sb), C = mkz(be[i], nc, sc);
    st[i] = QAT_OP(be[i], gemm, ta, tb, M, N, K, 1.0f, &A, &B, 0.0f, &C);
    del(be[i], &A), del(be[i], &B), del(be[i], &C);
  }
  same(what, st[0], st[1], want);
}

START_TEST(test_gemm_args) {
  if (!need_gpu()) return;
  const int64_t M = 4, N = 3, K = 6;
  gemm_args("gemm ok", 0, 0, M, N, K, 2, (int64_t[]){M, K}, 2, (int64_t[]){K, N}, 2,
            (int64_t[]){M, N}, QAT_OK);
  gemm_args("gemm ok ta tb, 3-dim A", 1, 1, M, N, K, 3, (int64_t[]){2, 3, M}, 2, (int64_t[]){N, K},
            2, (int64_t[]){M, N}, QAT_OK);
  gemm_args("gemm A [K, M] without ta", 0, 0, M, N, K, 2, (int64_t[]){K, M}, 2, (int64_t[]){K, N},
            2, (int64_t[]){M, N}, QAT_EINVAL);
  gemm_args("gemm A [M, K] with ta", 1, 0, M, N, K, 2, (int64_t[]){M, K}, 2, (int64_t[]){K, N}, 2,
            (int64_t[]){M, N}, QAT_EINVAL);
  gemm_args("gemm B [N, K] without tb", 0, 0, M, N, K, 2, (int64_t[]){M, K}, 2, (int64_t[]){N, K},
            2, (int64_t[]){M, N}, QAT_EINVAL);
  gemm_args("gemm B flat", 0, 1, M, N, K, 2, (int64_t[]){M, K}, 1, (int64_t[]){N * K}, 2,
            (int64_t[]){M, N}, QAT_EINVAL);
  gemm_args("gemm C [N, M]", 0, 0, M, N, K, 2, (int64_t[]){M, K}, 2, (int64_t[]){K, N}, 2,
            (int64_t[]){N, M}, QAT_EINVAL);
  gemm_args("gemm C 0-dim (M = N = 1)", 0, 0, 1, 1, K, 2, (int64_t[]){1, K}, 2, (int64_t[]){K, 1},
            0, (int64_t[]){0}, QAT_EINVAL);
  gemm_args("gemm K = 0: A, B any empty shape", 0, 0, M, N, 0, 2, (int64_t[]){0, 5}, 1,
            (int64_t[]){0}, 2, (int64_t[]){M, N}, QAT_OK);
  gemm_args("gemm M = 0: C any empty shape", 0, 0, 0, N, K, 1, (int64_t[]){0}, 2,
            (int64_t[]){K, N}, 2, (int64_t[]){7, 0}, QAT_OK);

  /* C overlapping an input (K > 0) */
  qat_backend *be[2] = {cpu(), g_gpu};
  qat_status st[2], st2[2], st3[2];
  for (int i = 0; i < 2; i++) {
    qat_tensor buf = mkz(be[i], 1, (int64_t[]){64});
    qat_tensor A = qat_view(buf.data, QAT_F32, be[i]->device, 2, (int64_t[]){4, 4});
    qat_tensor B = qat_view((float *)buf.data + 16, QAT_F32, be[i]->device, 2, (int64_t[]){4, 4});
    qat_tensor C = qat_view((float *)buf.data + 8, QAT_F32, be[i]->device, 2, (int64_t[]){4, 4});
    qat_tensor D = qat_view((float *)buf.data + 32, QAT_F32, be[i]->device, 2, (int64_t[]){4, 4});
    st[i] = QAT_OP(be[i], gemm, 0, 0, 4, 4, 4, 1.0f, &A, &B, 0.0f, &C);
    st2[i] = QAT_OP(be[i], gemm, 0, 0, 4, 4, 4, 1.0f, &A, &A, 0.0f, &D); /* A twice is fine */
    qat_tensor A0 = qat_view(buf.data, QAT_F32, be[i]->device, 2, (int64_t[]){4, 0});
    qat_tensor B0 = qat_view(buf.data, QAT_F32, be[i]->device, 2, (int64_t[]){0, 4});
    st3[i] = QAT_OP(be[i], gemm, 0, 0, 4, 4, 0, 1.0f, &A0, &B0, 0.0f, &A); /* K = 0 */
    del(be[i], &buf);
  }
  same("gemm C overlaps A and B", st[0], st[1], QAT_EINVAL);
  same("gemm A as both inputs", st2[0], st2[1], QAT_OK);
  same("gemm K = 0, C at the inputs' address", st3[0], st3[1], QAT_OK);
}
END_TEST

START_TEST(test_rmsnorm_args) {
  if (!need_gpu()) return;
  qat_backend *be[2] = {cpu(), g_gpu};
  const float eps[4] = {1e-5f, 0.0f, -1e-5f, NAN};
  const qat_status want[4] = {QAT_OK, QAT_OK, QAT_EINVAL, QAT_EINVAL};
  qat_status st[4][2], stn[2], st0[2];
  for (int i = 0; i < 2; i++) {
    qat_tensor x = mkz(be[i], 2, (int64_t[]){3, 8}), w = mkz(be[i], 1, (int64_t[]){8});
    qat_tensor o = mkz(be[i], 2, (int64_t[]){3, 8}), r = mkz(be[i], 1, (int64_t[]){3});
    for (int e = 0; e < 4; e++) st[e][i] = QAT_OP(be[i], rmsnorm_fwd, &x, &w, eps[e], &o, &r);
    stn[i] = QAT_OP(be[i], rmsnorm_fwd, &x, &w, 1e-5f, &o, NULL);
    qat_tensor x0 = qat_view(x.data, QAT_F32, be[i]->device, 0, NULL);
    qat_tensor w1 = qat_view(w.data, QAT_F32, be[i]->device, 1, (int64_t[]){1});
    qat_tensor o0 = qat_view(o.data, QAT_F32, be[i]->device, 0, NULL);
    qat_tensor r1 = qat_view(r.data, QAT_F32, be[i]->device, 1, (int64_t[]){1});
    st0[i] = QAT_OP(be[i], rmsnorm_fwd, &x0, &w1, 1e-5f, &o0, &r1);
    del(be[i], &x), del(be[i], &w), del(be[i], &o), del(be[i], &r);
  }
  char what[64];
  for (int e = 0; e < 4; e++) {
    snprintf(what, sizeof what, "rmsnorm_fwd eps %g", (double)eps[e]);
    same(what, st[e][0], st[e][1], want[e]);
  }
  same("rmsnorm_fwd rstd NULL", stn[0], stn[1], QAT_EINVAL);
  same("rmsnorm_fwd x 0-dim", st0[0], st0[1], QAT_EINVAL);
}
END_TEST

START_TEST(test_bias_args) {
  if (!need_gpu()) return;
  qat_backend *be[2] = {cpu(), g_gpu};
  struct {
    const char *what;
    int ny;
    int64_t y[2], nbias;
    qat_status want;
  } cs[] = {
      {"bias [3, 5] + [5]", 2, {3, 5}, 5, QAT_OK},
      {"bias [3, 0] + [0] (C = 0: no-op)", 2, {3, 0}, 0, QAT_OK},
      {"bias [0, 5] + [5] (N = 0: no-op)", 2, {0, 5}, 5, QAT_OK},
      {"bias [3, 5] + [3]", 2, {3, 5}, 3, QAT_EINVAL},
      {"bias [15] + [15]", 1, {15, 0}, 15, QAT_OK},
      {"bias [3, 0] + [3]", 2, {3, 0}, 3, QAT_EINVAL},
      {"bias 0-dim + [1]", 0, {0, 0}, 1, QAT_EINVAL},
  };
  for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
    qat_status f[2], b[2];
    for (int i = 0; i < 2; i++) {
      qat_tensor y = mkz(be[i], cs[c].ny, cs[c].y), bias = mkz(be[i], 1, &cs[c].nbias);
      f[i] = QAT_OP(be[i], bias_fwd, &y, &bias);
      b[i] = QAT_OP(be[i], bias_bwd, &y, &bias);
      del(be[i], &y), del(be[i], &bias);
    }
    char what[80];
    snprintf(what, sizeof what, "%s fwd", cs[c].what);
    same(what, f[0], f[1], cs[c].want);
    snprintf(what, sizeof what, "%s bwd", cs[c].what);
    same(what, b[0], b[1], cs[c].want);
  }
}
END_TEST

START_TEST(test_rope_args) {
  if (!need_gpu()) return;
  qat_backend *be[2] = {cpu(), g_gpu};
  qat_status s4[2], s3[2], sodd[2];
  for (int i = 0; i < 2; i++) {
    qat_tensor x = mkz(be[i], 4, (int64_t[]){1, 2, 3, 8}), f = mkz(be[i], 1, (int64_t[]){4});
    s4[i] = QAT_OP(be[i], rope, &x, &f, 0, 0);
    qat_tensor x3 = qat_view(x.data, QAT_F32, be[i]->device, 3, (int64_t[]){2, 3, 8});
    s3[i] = QAT_OP(be[i], rope, &x3, &f, 0, 0);
    qat_tensor xo = qat_view(x.data, QAT_F32, be[i]->device, 4, (int64_t[]){1, 2, 3, 7});
    sodd[i] = QAT_OP(be[i], rope, &xo, &f, 0, 0);
    del(be[i], &x), del(be[i], &f);
  }
  same("rope [B, T, H, D]", s4[0], s4[1], QAT_OK);
  same("rope [T, H, D]", s3[0], s3[1], QAT_EINVAL);
  same("rope odd D", sodd[0], sodd[1], QAT_EINVAL);
}
END_TEST

/* A shape the CPU's qat_cpu_check_arg rejects (ndim outside [0, QAT_MAX_DIMS], a negative dim) is
 * QAT_EINVAL on both backends, whichever op and argument carries it, and before the dtype is
 * looked at (an I32 tensor passed where F32 is expected still gets EINVAL). */
START_TEST(test_dims_args) {
  if (!need_gpu()) return;
  qat_backend *be[2] = {cpu(), g_gpu};
  struct {
    const char *what;
    int ndim;
    int64_t d1;
  } cs[] = {
      {"ndim -1", -1, 4},
      {"ndim QAT_MAX_DIMS + 1", QAT_MAX_DIMS + 1, 4},
      {"dim -4", 2, -4},
  };
  enum { NOPS = 7 };
  static const char *ops[NOPS] = {"axpy x",       "axpy y",        "sumsq x",    "bias_fwd y",
                                  "rmsnorm_fwd x", "embedding tokens", "axpy x I32"};
  for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
    qat_status st[NOPS][2];
    for (int i = 0; i < 2; i++) {
      qat_tensor x = mkz(be[i], 2, (int64_t[]){3, 4}), y = mkz(be[i], 2, (int64_t[]){3, 4});
      qat_tensor w = mkz(be[i], 1, (int64_t[]){4}), r = mkz(be[i], 1, (int64_t[]){3});
      qat_tensor tab = mkz(be[i], 2, (int64_t[]){5, 4});
      qat_tensor tok = mkraw(be[i], QAT_I32, 3, NULL), xi = mkraw(be[i], QAT_I32, 12, NULL);
      qat_tensor bad = x, badtok = tok, badi = xi;
      bad.ndim = badi.ndim = cs[c].ndim;
      badtok.ndim = cs[c].ndim == 2 ? 1 : cs[c].ndim;
      if (cs[c].ndim == 2) {
        bad.shape[1] = cs[c].d1;
        badi.shape[0] = 3, badi.shape[1] = cs[c].d1;
        badtok.shape[0] = -3;
      }
      double ss = 0.0;
      st[0][i] = QAT_OP(be[i], axpy, 1.0f, &bad, &y);
      st[1][i] = QAT_OP(be[i], axpy, 1.0f, &x, &bad);
      st[2][i] = QAT_OP(be[i], sumsq, &bad, &ss);
      st[3][i] = QAT_OP(be[i], bias_fwd, &bad, &w);
      st[4][i] = QAT_OP(be[i], rmsnorm_fwd, &bad, &w, 1e-5f, &y, &r);
      st[5][i] = QAT_OP(be[i], embedding_fwd, &badtok, &tab, &y);
      st[6][i] = QAT_OP(be[i], axpy, 1.0f, &badi, &y);
      del(be[i], &x), del(be[i], &y), del(be[i], &w), del(be[i], &r), del(be[i], &tab);
      del(be[i], &tok), del(be[i], &xi);
    }
    char what[80];
    for (int o = 0; o < NOPS; o++) {
      snprintf(what, sizeof what, "%s: %s", ops[o], cs[c].what);
      same(what, st[o][0], st[o][1], QAT_EINVAL);
    }
  }
}
END_TEST

/* rmsnorm compares the full shapes of x and out / dout / dx (same element count is not enough),
 * and its backward with C = 0 is a no-op while the forward rejects it. */
START_TEST(test_rmsnorm_shape_args) {
  if (!need_gpu()) return;
  qat_backend *be[2] = {cpu(), g_gpu};
  enum { NC = 7 };
  static const char *what[NC] = {
      "rmsnorm_fwd out [8, 3] for x [3, 8]", "rmsnorm_fwd out [1, 3, 8] for x [3, 8]",
      "rmsnorm_bwd dout [8, 3] for x [3, 8]", "rmsnorm_bwd dx [24] for x [3, 8]",
      "rmsnorm_bwd x [3, 0] (C = 0: no-op)",  "rmsnorm_bwd x [3, 0], dx and dw NULL",
      "rmsnorm_fwd x [3, 0]"};
  static const qat_status want[NC] = {QAT_EINVAL, QAT_EINVAL, QAT_EINVAL, QAT_EINVAL,
                                      QAT_OK,     QAT_OK,     QAT_EINVAL};
  qat_status st[NC][2];
  for (int i = 0; i < 2; i++) {
    qat_device d = be[i]->device;
    qat_tensor x = mkz(be[i], 2, (int64_t[]){3, 8}), w = mkz(be[i], 1, (int64_t[]){8});
    qat_tensor o = mkz(be[i], 2, (int64_t[]){3, 8}), r = mkz(be[i], 1, (int64_t[]){3});
    qat_tensor g = mkz(be[i], 2, (int64_t[]){3, 8}), dx = mkz(be[i], 2, (int64_t[]){3, 8});
    qat_tensor dw = mkz(be[i], 1, (int64_t[]){8});
    qat_tensor o83 = qat_view(o.data, QAT_F32, d, 2, (int64_t[]){8, 3});
    qat_tensor o138 = qat_view(o.data, QAT_F32, d, 3, (int64_t[]){1, 3, 8});
    qat_tensor g83 = qat_view(g.data, QAT_F32, d, 2, (int64_t[]){8, 3});
    qat_tensor dx24 = qat_view(dx.data, QAT_F32, d, 1, (int64_t[]){24});
    st[0][i] = QAT_OP(be[i], rmsnorm_fwd, &x, &w, 1e-5f, &o83, &r);
    st[1][i] = QAT_OP(be[i], rmsnorm_fwd, &x, &w, 1e-5f, &o138, &r);
    st[2][i] = QAT_OP(be[i], rmsnorm_bwd, &g83, &x, &w, &r, &dx, &dw);
    st[3][i] = QAT_OP(be[i], rmsnorm_bwd, &g, &x, &w, &r, &dx24, &dw);
    qat_tensor x0 = qat_view(x.data, QAT_F32, d, 2, (int64_t[]){3, 0});
    qat_tensor g0 = qat_view(g.data, QAT_F32, d, 2, (int64_t[]){3, 0});
    qat_tensor dx0 = qat_view(dx.data, QAT_F32, d, 2, (int64_t[]){3, 0});
    qat_tensor w0 = qat_view(w.data, QAT_F32, d, 1, (int64_t[]){0});
    qat_tensor dw0 = qat_view(dw.data, QAT_F32, d, 1, (int64_t[]){0});
    qat_tensor o0 = qat_view(o.data, QAT_F32, d, 2, (int64_t[]){3, 0});
    st[4][i] = QAT_OP(be[i], rmsnorm_bwd, &g0, &x0, &w0, &r, &dx0, &dw0);
    st[5][i] = QAT_OP(be[i], rmsnorm_bwd, &g0, &x0, &w0, &r, NULL, NULL);
    st[6][i] = QAT_OP(be[i], rmsnorm_fwd, &x0, &w0, 1e-5f, &o0, &r);
    TU_REQUIRE_OK(be[i]->sync(be[i]));
    del(be[i], &x), del(be[i], &w), del(be[i], &o), del(be[i], &r), del(be[i], &g);
    del(be[i], &dx), del(be[i], &dw);
  }
  for (int c = 0; c < NC; c++) same(what[c], st[c][0], st[c][1], want[c]);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_valid");
  TCase *tc = tcase_create("cuda_valid");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_convert_bits);
  tcase_add_test(tc, test_convert_args);
  tcase_add_test(tc, test_gemm_args);
  tcase_add_test(tc, test_rmsnorm_args);
  tcase_add_test(tc, test_bias_args);
  tcase_add_test(tc, test_rope_args);
  tcase_add_test(tc, test_dims_args);
  tcase_add_test(tc, test_rmsnorm_shape_args);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}

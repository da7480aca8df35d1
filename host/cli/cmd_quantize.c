/* qat quantize: PTQ of a Hugging Face folder (--method gptq: quantize_gptq.c). RTN-quantizes every decoder Linear weight
 * (q/k/v/o/gate/up/down projections) with min-max or MSE-searched (--init mse) step sizes and
 * writes a HF folder whose Linear weights are the fake-quant (dequantized) values in the input's
 * dtype; every other tensor and file is copied unchanged; qat_quant.json records the quantizer.
 * Output is built in a temporary sibling and renamed, so an error leaves nothing at --out.
 * --packed writes each decoder Linear as packed codes instead (quant/packed.h: <base>.qcodes,
 * .qscales in --scale-dtype, .qzeros; "qat_packed" file metadata), the same codes and grid. */
#include "backend/backend.h"
#include "cli/cli.h"
#include "core/log.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "quant/packed.h"
#include "quant/quant.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decoder Linear weights by HF name. */
static int is_decoder_linear(const char *name) {
  static regex_t re;
  static int ready = 0;
  if (!ready) {
    regcomp(&re,
            "^model\\.layers\\.[0-9]+\\.(self_attn\\.(q|k|v|o)_proj|mlp\\.(gate|up|down)_proj)"
            "\\.weight$",
            REG_EXTENDED | REG_NOSUB);
    ready = 1;
  }
  return regexec(&re, name, 0, NULL, 0) == 0;
}

typedef struct {
  double sq_err, sq_ref, max_err;
  int64_t n;
} err_acc;

/* RTN fake-quant of one tensor: host float32 w[rows, cols] -> w_hat, with error stats. With pk
 * (packed output), the codes fq_forward used are packed into *pk with scales of dtype sdt, the
 * error is that of the packed weights, and *f16_err gets max |dequant(pk) - w_hat| (the F16
 * rounding of the scales; 0 with F32 scales). */
static qat_status rtn_tensor(const qat_qspec *q, const qat_st_tensor *t, void *out, err_acc *e,
                             double *rel_out, qat_packed *pk, qat_dtype sdt, double *f16_err) {
  qat_backend *be = qat_backend_cpu();
  int64_t rows = t->shape[0], cols = t->shape[1], n = rows * cols;
  int64_t ss[2];
  qat_qspec_sshape(q, rows, cols, ss);
  float *w = malloc((size_t)n * 4), *wh = malloc((size_t)n * 4);
  float *s = malloc((size_t)(ss[0] * ss[1]) * 4), *z = malloc((size_t)(ss[0] * ss[1]) * 4);
  uint8_t *codes = pk ? malloc((size_t)n) : NULL;
  qat_status st = QAT_OK;
  if (!w || !wh || !s || !z || (pk && !codes)) {
    st = QAT_FAIL(QAT_ENOMEM, "tensor %s: cannot allocate %lld floats", t->name, (long long)n);
    goto done;
  }
  QAT_CHECK(st, qat_st_read_f32(t, w), done);
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(w[i])) {
      st = QAT_FAIL(QAT_EINVAL, "tensor %s: non-finite weight at index %lld", t->name,
                    (long long)i);
      goto done;
    }
  qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, rows, cols);
  tw.name = t->name;
  qat_tensor twh = qat_view2(wh, QAT_F32, QAT_DEV_CPU, rows, cols);
  qat_tensor ts = qat_view(s, QAT_F32, QAT_DEV_CPU, 2, ss);
  qat_tensor tz = qat_view(z, QAT_F32, QAT_DEV_CPU, 2, ss);
  qat_tensor *pz = q->sym ? NULL : &tz;
  QAT_CHECK(st, QAT_OP(be, fq_init, q, &tw, &ts, pz), done);
  QAT_CHECK(st, QAT_OP(be, fq_forward, q, &tw, &ts, pz, &twh), done);
  if (pk) {
    qat_tensor tc = qat_view2(codes, QAT_U8, QAT_DEV_CPU, rows, cols);
    QAT_CHECK(st, QAT_OP(be, fq_codes, q, &tw, &ts, pz, &tc), done);
    QAT_CHECK(st, qat_packed_alloc(pk, q, rows, cols, sdt, t->name), done);
    QAT_CHECK(st, qat_packed_pack(pk, codes, s, q->sym ? NULL : z, t->name), done);
    /* the error of what is stored: the packed weights, scales rounded to sdt */
    qat_packed_dequant(pk, 0, rows, (float *)out);
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
      double d = fabs((double)((float *)out)[i] - wh[i]);
      if (d > m) m = d;
    }
    *f16_err = m;
    memcpy(wh, out, (size_t)n * 4);
  } else {
    /* round-trip error measured after conversion to the output dtype */
    QAT_CHECK(st, qat_convert_from_f32(wh, out, t->dtype, (size_t)n), done);
    QAT_CHECK(st, qat_convert_to_f32(out, t->dtype, wh, (size_t)n), done);
  }
  double sq = 0, ref = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)wh[i] - w[i];
    sq += d * d;
    ref += (double)w[i] * w[i];
    if (fabs(d) > e->max_err) e->max_err = fabs(d);
  }
  e->sq_err += sq;
  e->sq_ref += ref;
  e->n += n;
  *rel_out = ref > 0 ? sqrt(sq / ref) : 0;
done:
  free(w);
  free(wh);
  free(s);
  free(z);
  free(codes);
  if (st != QAT_OK) qat_context(st, "quantize");
  return st;
}

static const char *base_name(const char *p) {
  const char *b = strrchr(p, '/');
  return b ? b + 1 : p;
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Quantize one safetensors file of the set into tmpdir/<same name>. */
static qat_status quantize_file(const qat_qspec *q, const qat_st_file *f, const char *tmpdir,
                                err_acc *e, int *nq, int packed, qat_dtype sdt) {
  qat_st_writer w;
  qat_st_writer_init(&w);
  void **bufs = calloc((size_t)f->n + 1, sizeof *bufs);
  qat_packed *pks = packed ? calloc((size_t)f->n + 1, sizeof *pks) : NULL;
  int npk = 0;
  qat_status st = QAT_OK;
  if (!bufs || (packed && !pks)) {
    free(bufs);
    free(pks);
    return QAT_FAIL(QAT_ENOMEM, "quantize: out of memory");
  }
  for (int i = 0; i < f->nmeta; i++)
    QAT_CHECK(st, qat_st_writer_meta(&w, f->meta_keys[i], f->meta_vals[i]), done);
  for (int i = 0; i < f->n; i++) {
    const qat_st_tensor *t = &f->tensors[i];
    const void *data = t->data;
    if (is_decoder_linear(t->name)) {
      if (t->ndim != 2 ||
          (t->dtype != QAT_F32 && t->dtype != QAT_F16 && t->dtype != QAT_BF16)) {
        st = QAT_FAIL(QAT_EUNSUPPORTED, "%s: tensor %s: expected a 2-D float weight, got %s",
                      f->path, t->name, qat_dtype_name(t->dtype));
        goto done;
      }
      if (q->group > 0 && t->shape[1] % q->group != 0)
        qat_warn("%s: %lld columns is not a multiple of group %d: trailing partial group",
                 t->name, (long long)t->shape[1], q->group);
      /* packed: the F32 dequantized weights are measured in bufs[i], not written */
      bufs[i] = malloc(packed ? (size_t)qat_st_numel(t) * 4 + 1 : t->end - t->begin + 1);
      if (!bufs[i]) {
        st = QAT_FAIL(QAT_ENOMEM, "tensor %s: out of memory", t->name);
        goto done;
      }
      double rel = 0, f16 = 0;
      qat_packed *pk = packed ? &pks[npk] : NULL;
      QAT_CHECK(st, rtn_tensor(q, t, bufs[i], e, &rel, pk, sdt, &f16), done);
      (*nq)++;
      if (pk) {
        npk++;
        char base[512];
        snprintf(base, sizeof base, "%.*s", (int)(strlen(t->name) - 7), t->name); /* ".weight" */
        printf("  %-52s [%6lld, %6lld] packed %.3f bpw rel_rmse %.4f scale rounding %.3g\n",
               t->name, (long long)t->shape[0], (long long)t->shape[1], qat_packed_bpw(pk), rel,
               f16);
        QAT_CHECK(st, qat_packed_st_add(&w, base, pk), done);
        continue;
      }
      printf("  %-52s [%6lld, %6lld] %-4s rel_rmse %.4f\n", t->name, (long long)t->shape[0],
             (long long)t->shape[1], qat_dtype_name(t->dtype), rel);
      data = bufs[i];
    }
    QAT_CHECK(st, qat_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, data), done);
  }
  char path[4096], meta[256];
  if (npk) QAT_CHECK(st, qat_st_writer_meta(&w, "qat_packed", qat_packed_meta(q, sdt, meta, sizeof meta)), done);
  QAT_CHECK(st, qat_path_join(path, sizeof path, tmpdir, base_name(f->path)), done);
  QAT_CHECK(st, qat_st_write(&w, path), done);
done:
  for (int i = 0; i < f->n; i++) free(bufs[i]);
  for (int i = 0; packed && i <= npk; i++) qat_packed_free(&pks[i]);
  free(pks);
  free(bufs);
  qat_st_writer_free(&w);
  return st;
}

static qat_status copy_other_files(const char *src, const char *dst) {
  char **names = NULL;
  int n = 0;
  QAT_TRY(qat_list_dir(src, &names, &n));
  qat_status st = QAT_OK;
  for (int i = 0; i < n && st == QAT_OK; i++) {
    if (ends_with(names[i], ".safetensors")) continue;
    char a[4096], b[4096];
    st = qat_path_join(a, sizeof a, src, names[i]);
    if (st == QAT_OK) st = qat_path_join(b, sizeof b, dst, names[i]);
    if (st == QAT_OK && !qat_is_dir(a)) st = qat_copy_file(a, b);
  }
  qat_free_list(names, n);
  return st;
}

/* The quantizer from --quant SPEC, or from --bits/--group/--sym/--init (not both ways). */
static qat_status spec_from_flags(const qat_flag *fl, int nf, qat_qspec *q) {
  const char *spec = qat_flag_get(fl, nf, "quant"), *init = qat_flag_get(fl, nf, "init");
  if (spec) {
    const char *other[] = {"bits", "group", "sym", "init"};
    for (int i = 0; i < 4; i++)
      if (qat_flag_get(fl, nf, other[i]))
        return QAT_FAIL(QAT_EUSAGE, "--quant %s: give the spec or --%s, not both", spec, other[i]);
    QAT_TRY(qat_quant_parse(spec, q));
    q->grad = QAT_QGRAD_STE; /* nothing is trained here */
    return QAT_OK;
  }
  long bits, group;
  QAT_TRY(qat_flag_int(fl, nf, "bits", 2, 8, 4, &bits));
  QAT_TRY(qat_flag_int(fl, nf, "group", -1, 1 << 30, 128, &group));
  qat_qinit mode = QAT_QINIT_MINMAX;
  if (init && !qat_qinit_from_name(init, &mode))
    return QAT_FAIL(QAT_EUSAGE, "--init %s: expected minmax or mse", init);
  *q = (qat_qspec){.bits = (int)bits, .group = (int)group,
                   .sym = qat_flag_get(fl, nf, "sym") != NULL, .grad = QAT_QGRAD_STE,
                   .init = mode};
  return qat_qspec_check(q);
}

qat_status cmd_quantize(int argc, char **argv) {
  qat_flag fl[] = {
      {"model", 1, NULL, "input Hugging Face folder"},
      {"out", 1, NULL, "output folder (replaced atomically)"},
      {"method", 1, NULL, "rtn (default) or gptq (needs --calib)"},
      {"bits", 1, NULL, "bits per weight, 2..8 (default 4)"},
      {"group", 1, NULL, "group size; -1 per-channel, 0 per-tensor (default 128)"},
      {"sym", 0, NULL, "symmetric quantizer (default asymmetric)"},
      {"init", 1, NULL,
       "minmax (default) or mse: GPTQ's clipping search, the shrunk min-max range (p = 1 .. 0.21) "
       "with the least sum |w_hat - w|^2.4 per group"},
      {"quant", 1, NULL,
       "the whole quantizer as a spec instead, e.g. rtn:2g32:mse or rtn:4g128:sym"},
      {"packed", 0, NULL,
       "write the Linears as packed codes (qat_packed safetensors; the group must divide the "
       "input columns) instead of fake-quant weights"},
      {"scale-dtype", 1, NULL, "packed: f16 (default) or f32 scales (f32: exactly the fake-quant grid)"},
      {"calib", 1, NULL, "gptq: calibration tokens (.npy, e.g. from qat tokenize)"},
      {"samples", 1, NULL, "gptq: calibration windows (default 128)"},
      {"seq-len", 1, NULL, "gptq: tokens per window (default min(2048, max_position_embeddings))"},
      {"damp", 1, NULL, "gptq: Hessian damping, a fraction of its mean diagonal (default 0.01)"},
      {"block", 1, NULL, "gptq: columns per lazy-update block (default 128)"},
      {"act-order", 0, NULL,
       "gptq: columns by decreasing Hessian diagonal, with static groups (grids from the weights "
       "before the loop)"},
      {"true-sequential", 0, NULL,
       "gptq: within a block q/k/v, then o, then gate/up, then down, each on inputs through the "
       "Linears already quantized"},
      {"skip-first", 1, NULL,
       "gptq: leading tokens of every window left out of the Hessians (default 0, the reference; 1 "
       "drops the attention-sink token, which made SmolLM2 W4 g128 worse: an experiment knob)"},
      {"first-weight", 1, NULL,
       "gptq: weight of each window's first token (an attention sink every later query reads) "
       "in the Hessians (default 1, the reference; SmolLM2: 1024)"},
      {"batch", 1, NULL, "gptq: windows per block pass (default 4)"},
      {"seed", 1, NULL, "gptq: window sampling seed (default 0)"},
      {"device", 1, NULL, "gptq: cpu or cuda (default cuda when usable)"},
      {"help", 0, NULL, "show this help"},
  };
  int nf = (int)(sizeof fl / sizeof fl[0]);
  QAT_TRY(qat_parse_flags(argc, argv, fl, nf, "quantize"));
  if (qat_flag_get(fl, nf, "help")) {
    qat_print_usage("quantize",
                    "--model DIR --out DIR [--method rtn|gptq] [--bits N] [--group G] [--sym] "
                    "[--init minmax|mse] | [--quant SPEC] [--packed [--scale-dtype f16|f32]]  [gptq: --calib T.npy [--samples N] "
                    "[--seq-len T] [--damp D] [--block B] [--act-order] [--true-sequential] "
                    "[--skip-first N] [--first-weight W] [--batch B] [--seed S] [--device D]]",
                    fl, nf);
    return QAT_OK;
  }
  const char *model = qat_flag_get(fl, nf, "model"), *out = qat_flag_get(fl, nf, "out");
  const char *method = qat_flag_get(fl, nf, "method");
  if (!model) return QAT_FAIL(QAT_EUSAGE, "--model is required");
  if (!out) return QAT_FAIL(QAT_EUSAGE, "--out is required");
  if (method && strcmp(method, "rtn") != 0 && strcmp(method, "gptq") != 0)
    return QAT_FAIL(QAT_EUSAGE, "--method %s: expected rtn or gptq", method);
  qat_qspec q;
  QAT_TRY(spec_from_flags(fl, nf, &q));
  int gptq = method && strcmp(method, "gptq") == 0;
  int packed = qat_flag_get(fl, nf, "packed") != NULL;
  const char *sdt_name = qat_flag_get(fl, nf, "scale-dtype");
  qat_dtype sdt = QAT_F16;
  if (sdt_name && !packed) return QAT_FAIL(QAT_EUSAGE, "--scale-dtype: only with --packed");
  if (sdt_name && strcmp(sdt_name, "f16") != 0 && strcmp(sdt_name, "f32") != 0)
    return QAT_FAIL(QAT_EUSAGE, "--scale-dtype %s: expected f16 or f32", sdt_name);
  if (sdt_name && strcmp(sdt_name, "f32") == 0) sdt = QAT_F32;
  if (packed && gptq) return QAT_FAIL(QAT_EUSAGE, "--packed: only for --method rtn so far");
  if (packed && q.group == 0)
    return QAT_FAIL(QAT_EUSAGE, "--packed: per-tensor scales are not a packed format");
  if (gptq) return qat_cli_quantize_gptq(model, out, &q, fl, nf);
  const char *gptq_only[] = {"calib", "samples", "seq-len", "damp", "block", "batch", "seed",
                             "device", "act-order", "true-sequential", "skip-first",
                             "first-weight"};
  for (int i = 0; i < (int)(sizeof gptq_only / sizeof gptq_only[0]); i++)
    if (qat_flag_get(fl, nf, gptq_only[i]))
      return QAT_FAIL(QAT_EUSAGE, "--%s: only for --method gptq", gptq_only[i]);
  const char *init_name = qat_qinit_name(q.init);
  char spec[64];
  qat_qspec shown = q;
  shown.grad = QAT_QGRAD_EFFICIENTQAT; /* the spec's default: no gradient option in the record */
  qat_quant_format(&shown, spec, sizeof spec);

  qat_st_set set;
  QAT_TRY(qat_st_set_open(model, &set));
  char tmp[4096];
  qat_status st = qat_dir_begin(out, tmp, sizeof tmp);
  if (st != QAT_OK) {
    qat_st_set_close(&set);
    return st;
  }
  err_acc e = {0};
  int nq = 0;
  printf("RTN W%d %s g%d init %s (%s) -> %s\n", q.bits, q.sym ? "sym" : "asym", q.group,
         init_name, spec, out);
  for (int i = 0; i < set.nfiles && st == QAT_OK; i++)
    st = quantize_file(&q, &set.files[i], tmp, &e, &nq, packed, sdt);
  if (st == QAT_OK) st = copy_other_files(model, tmp);
  if (st == QAT_OK && nq == 0)
    st = QAT_FAIL(QAT_EINVAL, "%s: no decoder Linear weights (model.layers.N.*_proj.weight) found",
                  model);
  if (st == QAT_OK) {
    char rec[512], path[4096];
    snprintf(rec, sizeof rec,
             "{\"method\": \"rtn\", \"bits\": %d, \"group\": %d, \"sym\": %s, "
             "\"init\": \"%s\", \"spec\": \"%s\", \"format\": \"%s\", \"tensors\": %d}\n",
             q.bits, q.group, q.sym ? "true" : "false", init_name, spec,
             packed ? "packed" : "fakequant", nq);
    st = qat_path_join(path, sizeof path, tmp, "qat_quant.json");
    if (st == QAT_OK) st = qat_write_file_atomic(path, rec, strlen(rec));
  }
  qat_st_set_close(&set);
  if (st == QAT_OK) st = qat_dir_commit(tmp, out);
  if (st != QAT_OK) {
    qat_dir_abort(tmp);
    return st;
  }
  printf("quantized %d tensors (%lld weights): rel_rmse %.5f, max_abs_err %.5g\n", nq,
         (long long)e.n, e.sq_ref > 0 ? sqrt(e.sq_err / e.sq_ref) : 0.0, e.max_err);
  return QAT_OK;
}

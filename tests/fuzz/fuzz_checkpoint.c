/* libFuzzer target: a training checkpoint, through what `qat train` does on resume:
 * qat_ckpt_latest on the run folder (finds RUN/ckpt-00000007), qat_ckpt_open (state.json parsed
 * and checked, state.safetensors validated), then every field read as its kind and every tensor
 * copied as the trainer does (F32 / F16 / BF16 through qat_ckpt_read_f32 at their stored shape,
 * other dtypes byte for byte). Parts: state.json, state.safetensors. Seeds: seeds.py
 * checkpoint. */
#include "fuzz_util.h"
#include "train/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("ckpt");
  char run[256], ck_dir[256], path[4096];
  fz_path(run, sizeof run, dir, "run");
  fz_path(ck_dir, sizeof ck_dir, run, "ckpt-00000007");
  if (qat_mkdir_p(ck_dir) != QAT_OK) abort();
  fz_part p[2];
  fz_split(data, size, 2, p);
  fz_write(ck_dir, "state.json", p[0], 1);
  fz_write(ck_dir, "state.safetensors", p[1], 1);
  int64_t step = -1;
  if (qat_ckpt_latest(run, path, sizeof path, &step) == QAT_OK && path[0]) {
    qat_ckpt ck;
    if (qat_ckpt_open(path, &ck) == QAT_OK) {
      if (ck.step != 7) abort(); /* the step must equal the directory's */
      for (int i = 0; i < ck.nfields; i++) {
        const qat_ckpt_field *f = &ck.fields[i];
        int64_t v;
        double d;
        const char *s;
        qat_status st = f->kind == QAT_CKF_INT     ? qat_ckpt_get_int(&ck, f->key, &v)
                        : f->kind == QAT_CKF_FLOAT ? qat_ckpt_get_float(&ck, f->key, &d)
                                                   : qat_ckpt_get_str(&ck, f->key, &s);
        if (st != QAT_OK || !qat_ckpt_has(&ck, f->key)) abort(); /* the first of duplicates */
      }
      for (int i = 0; i < ck.st.n; i++) {
        const qat_st_tensor *t = &ck.st.tensors[i];
        int is_float = t->dtype == QAT_F32 || t->dtype == QAT_F16 || t->dtype == QAT_BF16;
        void *buf = malloc((size_t)(t->end - t->begin) * 2 + 4);
        if (!buf) abort();
        qat_status st = is_float ? qat_ckpt_read_f32(&ck, t->name, buf, t->ndim, t->shape)
                                 : qat_ckpt_read(&ck, t->name, t->dtype, buf, t->ndim, t->shape);
        if (st != QAT_OK && qat_ckpt_find(&ck, t->name) == t) abort();
        free(buf);
        fz_end();
      }
      qat_ckpt_close(&ck);
    }
  }
  fz_end();
  return 0;
}

/* Training config: the fixtures in tests/data/configs (good file with every key set, minimal file
 * with defaults, typos, wrong types, impossible values), command-line overrides, print -> load
 * round trip, file checks, and configs/README.md documenting every key. */
#include "testutil.h"
#include "train/config.h"

#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG(name) "tests/data/configs/" name

static void has(const char *needle) {
  ck_assert_msg(strstr(qat_last_error(), needle) != NULL, "error '%s' lacks '%s'",
                qat_last_error(), needle);
}

START_TEST(test_good_file) {
  qat_config c;
  TU_REQUIRE_OK(qat_config_load(CFG("good.yaml"), NULL, 0, &c));
  ck_assert_str_eq(c.model, "models/tiny-llama");
  ck_assert_str_eq(c.data.train, "data/train.npy");
  ck_assert_str_eq(c.data.val, "data/val.npy");
  ck_assert_int_eq(c.data.seq_len, 256);
  ck_assert_int_eq(c.method, QAT_METHOD_PIPELINE);
  ck_assert_int_eq(c.quant.bits, 2);
  ck_assert_int_eq(c.quant.group, 64);
  ck_assert(c.quant.sym);
  ck_assert_int_eq(c.quant.grad, QAT_CFG_GRAD_LSQ);
  ck_assert_int_eq(c.quant.train, QAT_TRAIN_SCALES);
  ck_assert_int_eq(c.quant.init, QAT_CFG_INIT_MSE);
  ck_assert_int_eq(c.train.steps, 1000);
  ck_assert_int_eq(c.train.batch, 4);
  ck_assert_int_eq(c.train.grad_accum, 8);
  ck_assert(c.train.lr == 2e-5);
  ck_assert(c.train.lr_quant == 5e-4);
  ck_assert(c.train.weight_decay == 0.01);
  ck_assert_int_eq(c.train.warmup, 30);
  ck_assert_int_eq(c.train.schedule, QAT_SCHED_LINEAR);
  ck_assert(c.train.min_lr_ratio == 0.1);
  ck_assert_int_eq(c.train.seed, 1234);
  ck_assert(c.train.clip == 0.3);
  ck_assert_int_eq(c.train.eval_every, 100);
  ck_assert_int_eq(c.train.eval_windows, 40);
  ck_assert_int_eq(c.train.max_bad_steps, 2);
  ck_assert(c.train.recompute);
  ck_assert(c.distill.enabled);
  ck_assert(c.distill.temperature == 2.0);
  ck_assert(c.distill.alpha == 0.25);
  ck_assert_str_eq(c.checkpoint.dir, "runs/w2g64");
  ck_assert_int_eq(c.checkpoint.every, 250);
  ck_assert_int_eq(c.checkpoint.keep, 2);
  ck_assert_int_eq(c.checkpoint.resume, QAT_RESUME_MUST);
  ck_assert_int_eq(c.device, QAT_DEV_CUDA);
  ck_assert_int_eq(c.block_ap.samples, 128);
  ck_assert_int_eq(c.block_ap.epochs, 1);
  ck_assert(c.block_ap.lr_w == 2e-5);
  ck_assert(c.block_ap.lr_quant == 2e-4);
  ck_assert_int_eq(c.block_ap.cache_dtype, QAT_F32);
  ck_assert_int_eq(c.e2e_qp.steps, 64);
  ck_assert(c.e2e_qp.lr == 3e-5);
  ck_assert_int_eq(c.e2e_qp.seq_len, 4096);
  ck_assert_int_eq(qat_config_e2e_seq_len(&c), 4096); /* data.seq_len is 256 */
  ck_assert_str_eq(c.source, CFG("good.yaml"));
  qat_config_free(&c);
}
END_TEST

START_TEST(test_defaults) {
  qat_config c;
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), NULL, 0, &c));
  ck_assert_str_eq(c.model, "m");
  ck_assert_str_eq(c.data.val, "v.npy");
  ck_assert_int_eq(c.data.seq_len, 512);
  ck_assert_int_eq(c.method, QAT_METHOD_QAT);
  ck_assert_int_eq(c.quant.bits, 4);
  ck_assert_int_eq(c.quant.group, 128);
  ck_assert(!c.quant.sym);
  ck_assert_int_eq(c.quant.grad, QAT_CFG_GRAD_EFFICIENTQAT);
  ck_assert_int_eq(c.quant.train, QAT_TRAIN_ALL);
  ck_assert_int_eq(c.quant.init, QAT_CFG_INIT_MINMAX);
  ck_assert_int_eq(c.train.steps, 10);
  ck_assert_int_eq(c.train.batch, 8);
  ck_assert_int_eq(c.train.grad_accum, 1);
  ck_assert(c.train.lr == 1e-5);
  ck_assert(c.train.lr_quant == 1e-4);
  ck_assert(c.train.weight_decay == 0);
  ck_assert_int_eq(c.train.warmup, 0);
  ck_assert_int_eq(c.train.schedule, QAT_SCHED_COSINE);
  ck_assert(c.train.min_lr_ratio == 0.05);
  ck_assert_int_eq(c.train.seed, 0);
  ck_assert(c.train.clip == 0);
  ck_assert_int_eq(c.train.eval_every, 0);
  ck_assert_int_eq(c.train.eval_windows, 0);
  ck_assert_int_eq(c.train.max_bad_steps, 5);
  ck_assert(!c.train.recompute);
  ck_assert(!c.distill.enabled);
  ck_assert(c.distill.temperature == 1.0);
  ck_assert(c.distill.alpha == 0.5);
  ck_assert_int_eq(c.checkpoint.every, 0);
  ck_assert_int_eq(c.checkpoint.keep, 3);
  ck_assert_int_eq(c.checkpoint.resume, QAT_RESUME_AUTO);
  ck_assert_int_eq(c.device, QAT_DEV_CPU);
  ck_assert_int_eq(c.block_ap.samples, 4096);
  ck_assert_int_eq(c.block_ap.epochs, 2);
  ck_assert(c.block_ap.lr_w == 1e-5);
  ck_assert(c.block_ap.lr_quant == 1e-4);
  ck_assert_int_eq(c.block_ap.cache_dtype, QAT_BF16);
  ck_assert_int_eq(c.e2e_qp.steps, 128);
  ck_assert(c.e2e_qp.lr == 1e-5);
  ck_assert_int_eq(c.e2e_qp.seq_len, 0);
  ck_assert_int_eq(qat_config_e2e_seq_len(&c), 512); /* 0 = data.seq_len */
  qat_config_free(&c);
  /* qat_config_defaults agrees with a file that sets nothing optional */
  qat_config d;
  qat_config_defaults(&d);
  ck_assert_ptr_null(d.model);
  ck_assert_int_eq(d.quant.bits, 4);
  ck_assert(d.train.min_lr_ratio == 0.05);
  ck_assert_int_eq(d.block_ap.cache_dtype, QAT_BF16);
  qat_config_free(&d);
}
END_TEST

START_TEST(test_typo_key) {
  qat_config c;
  /* train.lr_qunat is on line 9 (after a blank line: libcyaml itself reports the line of the
   * previous value, 7, which the loader corrects) */
  ck_assert_int_eq(qat_config_load(CFG("typo.yaml"), NULL, 0, &c), QAT_EUSAGE);
  has("typo.yaml:9:");
  has("unknown key 'train.lr_qunat'");
  has("did you mean 'train.lr_quant'");
  ck_assert_ptr_null(c.model); /* left freed */
  ck_assert_int_eq(qat_config_load(CFG("typo_top.yaml"), NULL, 0, &c), QAT_EUSAGE);
  has("typo_top.yaml:9:");
  has("unknown key 'devcie'");
  has("did you mean 'device'");
}
END_TEST

START_TEST(test_wrong_type) {
  qat_config c;
  ck_assert_int_eq(qat_config_load(CFG("wrong_type.yaml"), NULL, 0, &c), QAT_EUSAGE);
  has("wrong_type.yaml:6:");
  has("key 'train.steps'");
  has("ten");
  has("expected an integer");
  ck_assert_int_eq(qat_config_load(CFG("bad_enum.yaml"), NULL, 0, &c), QAT_EUSAGE);
  has("bad_enum.yaml:6:");
  has("key 'quant.grad'");
  has("straight_through");
  has("ste, efficientqat, lsq");
  /* values libcyaml 1.3 would accept on its own: "flase" as true, "3.7" as 3 */
  ck_assert_int_eq(qat_config_load(CFG("bad_bool.yaml"), NULL, 0, &c), QAT_EUSAGE);
  has("bad_bool.yaml:7:");
  has("key 'quant.sym'");
  has("'flase'");
  has("true or false");
  ck_assert_int_eq(qat_config_load(CFG("bad_int.yaml"), NULL, 0, &c), QAT_EUSAGE);
  has("bad_int.yaml:4:"); /* flow style: the line of the section */
  has("key 'quant.bits'");
  has("'3.7'");
  ck_assert_int_eq(qat_config_load(CFG("dup_key.yaml"), NULL, 0, &c), QAT_EUSAGE);
  has("dup_key.yaml:5:");
  has("'train.steps' given twice");
  ck_assert_int_eq(qat_config_load(CFG("bad_syntax.yaml"), NULL, 0, &c), QAT_EUSAGE);
  has("bad_syntax.yaml:2: YAML syntax error");
  ck_assert_int_eq(qat_config_load(CFG("no_such_file.yaml"), NULL, 0, &c), QAT_EIO);
  has("no_such_file.yaml");
}
END_TEST

START_TEST(test_impossible_values) {
  qat_config c;
  ck_assert_int_eq(qat_config_load(CFG("bad_bits.yaml"), NULL, 0, &c), QAT_EUSAGE);
  has("bad_bits.yaml");
  has("quant.bits");
  has("9");
  static const struct {
    const char *ov, *key;
  } bad[] = {
      {"quant.bits=1", "quant.bits"},          {"quant.group=-2", "quant.group"},
      {"data.seq_len=1", "data.seq_len"},      {"train.steps=0", "train.steps"},
      {"train.batch=0", "train.batch"},        {"train.grad_accum=0", "train.grad_accum"},
      {"train.lr=-1e-5", "train.lr"},          {"train.lr=nan", "train.lr"},
      {"train.lr_quant=-1", "train.lr_quant"}, {"train.warmup=11", "train.warmup"},
      {"train.min_lr_ratio=2", "train.min_lr_ratio"},
      {"train.clip=-0.5", "train.clip"},       {"checkpoint.keep=0", "checkpoint.keep"},
      {"distill.temperature=0", "distill.temperature"},
      {"distill.alpha=1.5", "distill.alpha"},  {"distill.alpha=-0.1", "distill.alpha"},
      {"model=", "model"},                     {"checkpoint.dir=", "checkpoint.dir"},
      {"e2e_qp.steps=0", "e2e_qp.steps"},      {"block_ap.epochs=0", "block_ap.epochs"},
      {"e2e_qp.seq_len=1", "e2e_qp.seq_len"},  {"e2e_qp.seq_len=-1", "e2e_qp.seq_len"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *ov[] = {bad[i].ov};
    ck_assert_msg(qat_config_load(CFG("minimal.yaml"), ov, 1, &c) == QAT_EUSAGE, "%s accepted",
                  bad[i].ov);
    has(bad[i].key);
    has("minimal.yaml");
  }
  /* the limits themselves are fine */
  const char *ok[] = {"quant.bits=8", "quant.group=-1", "distill.alpha=1", "train.warmup=10",
                      "data.seq_len=2", "e2e_qp.seq_len=2"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), ok, 6, &c));
  qat_config_free(&c);
  /* train.steps is only required by method qat */
  const char *bap[] = {"method=block_ap", "train.steps=0"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), bap, 2, &c));
  qat_config_free(&c);
}
END_TEST

START_TEST(test_overrides) {
  qat_config c;
  const char *ov[] = {"quant.bits=3", "train.lr=3e-5", "distill.enabled=yes", "device=cuda",
                      "train.schedule=constant", "data.val=other.npy", "quant.bits=2"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), ov, 7, &c));
  ck_assert_int_eq(c.quant.bits, 2); /* applied in order: the last one wins */
  ck_assert(c.train.lr == 3e-5);
  ck_assert(c.distill.enabled);
  ck_assert_int_eq(c.device, QAT_DEV_CUDA);
  ck_assert_int_eq(c.train.schedule, QAT_SCHED_CONSTANT);
  ck_assert_str_eq(c.data.val, "other.npy");
  ck_assert_int_eq(c.train.steps, 10); /* untouched keys keep the file's value */
  qat_config_free(&c);

  const char *unk[] = {"train.lrr=1"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), unk, 1, &c), QAT_EUSAGE);
  has("unknown key 'train.lrr'");
  has("did you mean 'train.lr'");
  const char *bads[][2] = {{"train.steps=12x", "12x"},    {"quant.bits=4.5", "4.5"},
                           {"quant.sym=maybe", "maybe"},  {"method=awq", "awq"},
                           {"train.lr=fast", "fast"},
                           {"train.batch=99999999999", "99999999999"},
                           {"block_ap.cache_dtype=fp16", "fp16"},
                           {"block_ap.cache_dtype=BF16", "BF16"}};
  for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
    const char *o[] = {bads[i][0]};
    ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), o, 1, &c), QAT_EUSAGE);
    has(bads[i][1]);
    char key[64];
    snprintf(key, sizeof key, "'%.*s'", (int)(strchr(bads[i][0], '=') - bads[i][0]), bads[i][0]);
    has(key);
  }
  const char *noeq[] = {"train.steps"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), noeq, 1, &c), QAT_EUSAGE);
  has("key.sub=value");
}
END_TEST

/* c = the defaults plus the required keys: a config that validates (for tests that then break
 * one field directly). */
static void minimal_valid(qat_config *c) {
  qat_config_defaults(c);
  TU_REQUIRE_OK(qat_config_set(c, "model=m"));
  TU_REQUIRE_OK(qat_config_set(c, "data.train=t.npy"));
  TU_REQUIRE_OK(qat_config_set(c, "data.val=v.npy"));
  TU_REQUIRE_OK(qat_config_set(c, "checkpoint.dir=run"));
  TU_REQUIRE_OK(qat_config_set(c, "train.steps=1"));
  TU_REQUIRE_OK(qat_config_validate(c));
}

/* block_ap.cache_dtype: bf16 (default) or f32, by file or override; anything else is the usual
 * one-line key error (from a file: with its line), and validate rejects other dtypes set in the
 * struct directly. */
START_TEST(test_cache_dtype) {
  qat_config c;
  const char *f32[] = {"block_ap.cache_dtype=f32"}, *bf[] = {"block_ap.cache_dtype=bf16"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), f32, 1, &c));
  ck_assert_int_eq(c.block_ap.cache_dtype, QAT_F32);
  char *text;
  TU_REQUIRE_OK(qat_config_to_string(&c, &text));
  ck_assert_ptr_nonnull(strstr(text, "\n  cache_dtype: f32\n"));
  free(text);
  qat_config_free(&c);
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), bf, 1, &c));
  ck_assert_int_eq(c.block_ap.cache_dtype, QAT_BF16);
  qat_config_free(&c);

  const char *bad[] = {"block_ap.cache_dtype=fp16"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), bad, 1, &c), QAT_EUSAGE);
  has("'block_ap.cache_dtype'");
  has("'fp16'");
  has("one of: bf16, f32");
  ck_assert_ptr_null(strchr(qat_last_error(), '\n'));

  char *dir = tu_tmpdir(), path[512];
  snprintf(path, sizeof path, "%s/bad_dtype.yaml", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("model: m\ndata: {train: t.npy, val: v.npy}\ntrain:\n  steps: 10\ncheckpoint:\n"
        "  dir: run\nblock_ap:\n  samples: 8\n  cache_dtype: f16\n",
        f);
  fclose(f);
  ck_assert_int_eq(qat_config_load(path, NULL, 0, &c), QAT_EUSAGE);
  has("bad_dtype.yaml:9:");
  has("key 'block_ap.cache_dtype'");
  has("f16");
  has("bf16, f32");
  tu_rmrf(dir);
  free(dir);

  minimal_valid(&c);
  c.block_ap.cache_dtype = QAT_F16; /* a dtype the key cannot spell */
  ck_assert_int_eq(qat_config_validate(&c), QAT_EUSAGE);
  has("'block_ap.cache_dtype'");
  has("bf16 or f32");
  qat_config_free(&c);
}
END_TEST

/* quant.init: minmax (default) or mse, by file or override, printed back; anything else is the
 * usual one-line key error; validate rejects values the key cannot spell. */
START_TEST(test_quant_init) {
  qat_config c;
  const char *mse[] = {"quant.init=mse"}, *mm[] = {"quant.init=minmax"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), mse, 1, &c));
  ck_assert_int_eq(c.quant.init, QAT_CFG_INIT_MSE);
  char *text;
  TU_REQUIRE_OK(qat_config_to_string(&c, &text));
  ck_assert_ptr_nonnull(strstr(text, "\n  init: mse\n"));
  free(text);
  qat_config_free(&c);
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), mm, 1, &c));
  ck_assert_int_eq(c.quant.init, QAT_CFG_INIT_MINMAX);
  qat_config_free(&c);
  const char *bad[] = {"quant.init=gptq"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), bad, 1, &c), QAT_EUSAGE);
  has("'quant.init'");
  has("'gptq'");
  has("one of: minmax, mse");
  ck_assert_ptr_null(strchr(qat_last_error(), '\n'));
  minimal_valid(&c);
  c.quant.init = (qat_cfg_init)7;
  ck_assert_int_eq(qat_config_validate(&c), QAT_EUSAGE);
  has("'quant.init'");
  qat_config_free(&c);
}
END_TEST

/* quant.scale_dtype: f32 (default) or f16, by file or override, printed back; a bad value (f8)
 * is one line naming the key and the allowed values, from an override and from a file (with its
 * line); validate rejects dtypes the key cannot spell. */
START_TEST(test_quant_scale_dtype) {
  qat_config c;
  qat_config_defaults(&c);
  ck_assert_int_eq(c.quant.scale_dtype, QAT_F32);
  qat_config_free(&c);
  const char *f16[] = {"quant.scale_dtype=f16"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), f16, 1, &c));
  ck_assert_int_eq(c.quant.scale_dtype, QAT_F16);
  char *text;
  TU_REQUIRE_OK(qat_config_to_string(&c, &text));
  ck_assert_ptr_nonnull(strstr(text, "\n  scale_dtype: f16\n"));
  free(text);
  qat_config_free(&c);
  const char *bad[] = {"quant.scale_dtype=f8"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), bad, 1, &c), QAT_EUSAGE);
  has("'quant.scale_dtype'");
  has("'f8'");
  has("one of: f32, f16");
  ck_assert_ptr_null(strchr(qat_last_error(), '\n'));
  char *dir = tu_tmpdir(), path[512];
  snprintf(path, sizeof path, "%s/bad_sdt.yaml", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("model: m\ndata: {train: t.npy, val: v.npy}\ntrain:\n  steps: 10\ncheckpoint:\n"
        "  dir: run\nquant:\n  scale_dtype: f8\n", f);
  fclose(f);
  ck_assert_int_eq(qat_config_load(path, NULL, 0, &c), QAT_EUSAGE);
  has("bad_sdt.yaml:8:");
  has("key 'quant.scale_dtype'");
  has("f32, f16");
  ck_assert_ptr_null(strchr(qat_last_error(), '\n'));
  tu_rmrf(dir);
  free(dir);
  minimal_valid(&c);
  c.quant.scale_dtype = QAT_BF16;
  ck_assert_int_eq(qat_config_validate(&c), QAT_EUSAGE);
  has("'quant.scale_dtype'");
  has("f32 or f16");
  qat_config_free(&c);
}
END_TEST

/* e2e_qp.packed (E2E-QP on packed frozen codes): false by default, printed back; refused
 * with device cuda (no CUDA qgemm_ds) and with per-tensor scales, each naming the key. */
START_TEST(test_e2e_packed) {
  qat_config c;
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), NULL, 0, &c));
  ck_assert_int_eq(c.e2e_qp.packed, 0);
  qat_config_free(&c);
  const char *ov[] = {"method=pipeline", "e2e_qp.packed=true"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), ov, 2, &c));
  ck_assert_int_eq(c.e2e_qp.packed, 1);
  char *text;
  TU_REQUIRE_OK(qat_config_to_string(&c, &text));
  ck_assert_ptr_nonnull(strstr(text, "\n  packed: true\n"));
  free(text);
  qat_config_free(&c);
  const char *cuda[] = {"e2e_qp.packed=true", "device=cuda"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), cuda, 2, &c), QAT_EUSAGE);
  has("key 'e2e_qp.packed' = true");
  has("device cpu only");
  const char *pt[] = {"e2e_qp.packed=true", "quant.group=0"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), pt, 2, &c), QAT_EUSAGE);
  has("key 'e2e_qp.packed' = true");
  has("per-tensor");
  const char *u8cuda[] = {"e2e_qp.packed=false", "device=cuda"}; /* the U8 path runs on CUDA */
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), u8cuda, 2, &c));
  qat_config_free(&c);
  const char *word[] = {"e2e_qp.packed=maybe"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), word, 1, &c), QAT_EUSAGE);
  has("'e2e_qp.packed'");
}
END_TEST

/* e2e_qp.seq_len: 0 (default) = data.seq_len; an override sets E2E-QP's length alone and prints
 * back; below 2 (other than 0) or ill-typed is the usual key error. */
START_TEST(test_e2e_seq_len) {
  qat_config c;
  const char *ov[] = {"method=pipeline", "data.seq_len=2048", "e2e_qp.seq_len=4096"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), ov, 3, &c));
  ck_assert_int_eq(c.data.seq_len, 2048);
  ck_assert_int_eq(c.e2e_qp.seq_len, 4096);
  ck_assert_int_eq(qat_config_e2e_seq_len(&c), 4096);
  char *text;
  TU_REQUIRE_OK(qat_config_to_string(&c, &text));
  ck_assert_ptr_nonnull(strstr(text, "\ne2e_qp:\n"));
  ck_assert_ptr_nonnull(strstr(text, "\n  seq_len: 4096\n"));
  ck_assert_ptr_nonnull(strstr(text, "\n  seq_len: 2048\n"));
  free(text);
  qat_config_free(&c);
  const char *zero[] = {"data.seq_len=300", "e2e_qp.seq_len=0"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), zero, 2, &c));
  ck_assert_int_eq(qat_config_e2e_seq_len(&c), 300);
  qat_config_free(&c);
  /* shorter than data.seq_len is allowed (E2E-QP on shorter windows) */
  const char *shorter[] = {"data.seq_len=300", "e2e_qp.seq_len=100"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), shorter, 2, &c));
  ck_assert_int_eq(qat_config_e2e_seq_len(&c), 100);
  qat_config_free(&c);

  const char *one[] = {"e2e_qp.seq_len=1"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), one, 1, &c), QAT_EUSAGE);
  has("key 'e2e_qp.seq_len' = 1");
  has("must be 0 (= data.seq_len) or >= 2");
  const char *word[] = {"e2e_qp.seq_len=long"};
  ck_assert_int_eq(qat_config_load(CFG("minimal.yaml"), word, 1, &c), QAT_EUSAGE);
  has("'e2e_qp.seq_len'");
  has("'long'");

  char *dir = tu_tmpdir(), path[512];
  snprintf(path, sizeof path, "%s/bad_e2e_seq.yaml", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("model: m\ndata: {train: t.npy, val: v.npy, seq_len: 64}\nmethod: e2e_qp\n"
        "checkpoint:\n  dir: run\ne2e_qp:\n  steps: 4\n  seq_len: 4096.5\n",
        f);
  fclose(f);
  ck_assert_int_eq(qat_config_load(path, NULL, 0, &c), QAT_EUSAGE);
  has("bad_e2e_seq.yaml:8:");
  has("key 'e2e_qp.seq_len'");
  has("4096.5");
  tu_rmrf(dir);
  free(dir);
}
END_TEST

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
  s[n] = 0;
  fclose(f);
  return s;
}

/* load -> save -> load must give the same struct, field by field, and the same text. */
static void round_trip(const char *file, const char *const *ov, int n) {
  char *dir = tu_tmpdir();
  char path[512];
  snprintf(path, sizeof path, "%s/effective.yaml", dir);
  qat_config a, b;
  TU_REQUIRE_OK(qat_config_load(file, ov, n, &a));
  TU_REQUIRE_OK(qat_config_save(&a, path));
  TU_REQUIRE_OK(qat_config_load(path, NULL, 0, &b));
  ck_assert(qat_config_equal(&a, &b));
  /* independent of qat_config_equal: the strings and a few doubles bit for bit */
  ck_assert_str_eq(a.model, b.model);
  ck_assert_str_eq(a.data.train, b.data.train);
  ck_assert_str_eq(a.checkpoint.dir, b.checkpoint.dir);
  ck_assert(memcmp(&a.train.lr, &b.train.lr, sizeof(double)) == 0);
  ck_assert(memcmp(&a.train.min_lr_ratio, &b.train.min_lr_ratio, sizeof(double)) == 0);
  ck_assert(memcmp(&a.distill.alpha, &b.distill.alpha, sizeof(double)) == 0);
  ck_assert_int_eq(a.train.seed, b.train.seed);
  ck_assert_int_eq(a.method, b.method);
  char *sa, *sb;
  TU_REQUIRE_OK(qat_config_to_string(&a, &sa));
  TU_REQUIRE_OK(qat_config_to_string(&b, &sb));
  ck_assert_str_eq(sa, sb);
  char *disk = slurp(path);
  ck_assert_str_eq(disk, sa); /* save writes exactly what print prints */
  ck_assert_uint_eq(qat_config_hash(&a), qat_config_hash(&b));
  free(disk);
  free(sa);
  free(sb);
  qat_config_free(&a);
  qat_config_free(&b);
  tu_rmrf(dir);
  free(dir);
}

START_TEST(test_round_trip) {
  round_trip(CFG("good.yaml"), NULL, 0);
  round_trip(CFG("minimal.yaml"), NULL, 0);
  /* awkward strings and doubles that need 17 digits */
  const char *ov[] = {"model=dir with spaces/\"quoted\" \\back: #not-a-comment",
                      "data.train=caf\xc3\xa9/tab\there.npy", "checkpoint.dir=yes",
                      "train.lr=0.1", "train.lr_quant=3.3333333333333335e-05",
                      "distill.alpha=0.30000000000000004", "train.seed=-9223372036854775808",
                      "train.min_lr_ratio=1e-300"};
  round_trip(CFG("minimal.yaml"), ov, 8);
  /* a changed key changes the hash */
  qat_config a, b;
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), NULL, 0, &a));
  const char *o[] = {"train.seed=1"};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), o, 1, &b));
  ck_assert(!qat_config_equal(&a, &b));
  ck_assert_uint_ne(qat_config_hash(&a), qat_config_hash(&b));
  qat_config_free(&a);
  qat_config_free(&b);
}
END_TEST

START_TEST(test_check_files) {
  char *dir = tu_tmpdir();
  char model[400], tr[400], va[400], buf[600], cmd[1400];
  snprintf(model, sizeof model, "%s/model", dir);
  snprintf(tr, sizeof tr, "%s/train.npy", dir);
  snprintf(va, sizeof va, "%s/val.npy", dir);
  snprintf(cmd, sizeof cmd, "mkdir -p %s && touch %s %s", model, tr, va);
  ck_assert_int_eq(tu_run(cmd, NULL), 0);
  qat_config c;
  char o1[600], o2[600], o3[600];
  snprintf(o1, sizeof o1, "model=%s", model);
  snprintf(o2, sizeof o2, "data.train=%s", tr);
  snprintf(o3, sizeof o3, "data.val=%s", va);
  const char *ov[] = {o1, o2, o3};
  TU_REQUIRE_OK(qat_config_load(CFG("minimal.yaml"), ov, 3, &c));
  ck_assert_int_eq(qat_config_check_files(&c), QAT_EUSAGE); /* no config.json yet */
  has("model");
  has("config.json");
  snprintf(buf, sizeof buf, "touch %s/config.json", model);
  ck_assert_int_eq(tu_run(buf, NULL), 0);
  TU_REQUIRE_OK(qat_config_check_files(&c));
  TU_REQUIRE_OK(qat_config_set(&c, "data.val=/nonexistent/val.npy"));
  ck_assert_int_eq(qat_config_check_files(&c), QAT_EUSAGE);
  has("data.val");
  has("/nonexistent/val.npy");
  TU_REQUIRE_OK(qat_config_set(&c, "model=/nonexistent/model"));
  ck_assert_int_eq(qat_config_check_files(&c), QAT_EUSAGE);
  has("'model'");
  qat_config_free(&c);
  tu_rmrf(dir);
  free(dir);
}
END_TEST

/* Every key that print emits must be documented in configs/README.md as `section.key`. */
START_TEST(test_readme_documents_every_key) {
  char *readme = slurp("configs/README.md");
  qat_config c;
  qat_config_defaults(&c);
  char *text;
  TU_REQUIRE_OK(qat_config_to_string(&c, &text));
  char section[64] = "";
  int nkeys = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#') continue;
    char name[64], key[160];
    int indented = line[0] == ' ';
    ck_assert_int_eq(sscanf(line + (indented ? 2 : 0), "%63[^:]", name), 1);
    const char *colon = strchr(line, ':');
    if (!indented && colon[1] == 0) { /* "section:" */
      snprintf(section, sizeof section, "%s", name);
      continue;
    }
    snprintf(key, sizeof key, "`%s%s%s`", indented ? section : "", indented ? "." : "", name);
    ck_assert_msg(strstr(readme, key) != NULL, "configs/README.md does not document %s", key);
    nkeys++;
  }
  ck_assert_int_ge(nkeys, 38);
  free(text);
  free(readme);
  qat_config_free(&c);
}
END_TEST

/* Every shipped recipe (the .yaml files in configs/) parses and validates: a renamed or mistyped key in a
 * recipe fails here, not in a user's first run. */
START_TEST(test_shipped_configs_load) {
  glob_t g;
  ck_assert_int_eq(glob("configs/*.yaml", 0, NULL, &g), 0);
  ck_assert_uint_ge(g.gl_pathc, 9);
  for (size_t i = 0; i < g.gl_pathc; i++) {
    qat_config c;
    qat_status st = qat_config_load(g.gl_pathv[i], NULL, 0, &c);
    ck_assert_msg(st == QAT_OK, "%s: %s", g.gl_pathv[i], qat_last_error());
    qat_config_free(&c);
  }
  globfree(&g);
}
END_TEST

int main(void) {
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("config");
  tcase_add_test(tc, test_good_file);
  tcase_add_test(tc, test_defaults);
  tcase_add_test(tc, test_typo_key);
  tcase_add_test(tc, test_wrong_type);
  tcase_add_test(tc, test_impossible_values);
  tcase_add_test(tc, test_overrides);
  tcase_add_test(tc, test_quant_init);
  tcase_add_test(tc, test_quant_scale_dtype);
  tcase_add_test(tc, test_cache_dtype);
  tcase_add_test(tc, test_e2e_seq_len);
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_check_files);
  tcase_add_test(tc, test_readme_documents_every_key);
  tcase_add_test(tc, test_e2e_packed);
  tcase_add_test(tc, test_shipped_configs_load);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}

/* The QAT training loop (method qat), also run by EfficientQAT's E2E-QP with its own
 * hyperparameters and parameter list, and the orchestration of method block_ap / e2e_qp /
 * pipeline (train/eqat.h). See trainer.h.
 * Dimension letters: B batch (windows per micro-batch), V vocab, T the loop's context length:
 * data.seq_len, or for E2E-QP qat_config_e2e_seq_len (e2e_qp.seq_len when set); evaluation
 * windows are always data.seq_len. */
#include "train/trainer.h"

#include "core/log.h"
#include "io/fsutil.h"
#include "io/npy.h"
#include "model/eval.h"
#include "model/llama.h"
#include "model/llama_check.h"
#include "train/checkpoint.h"
#include "train/dist_train.h"
#include "train/distill.h"
#include "train/eqat.h"
#include "train/grad_bucket.h"
#include "train/optim.h"
#include "train/zero_ckpt.h"
#include "train/sampler.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t g_stop = 0;
void qat_train_request_stop(void) { g_stop = 1; }
int qat_train_stop_requested(void) { return g_stop != 0; }

typedef qat_train_job job; /* train/eqat.h: shared with the EfficientQAT phases */

/* qat_dist_agree, remembering that a failure was common to every rank (a clean close). */
static qat_status agree(job *J, qat_status st) {
  st = qat_dist_agree(J->dist, st);
  if (st != QAT_OK) J->agreed = 1;
  return st;
}

static qat_qgrad grad_mode(qat_cfg_grad g) {
  return g == QAT_CFG_GRAD_STE ? QAT_QGRAD_STE
         : g == QAT_CFG_GRAD_LSQ ? QAT_QGRAD_LSQ
                                 : QAT_QGRAD_EFFICIENTQAT;
}

/* min_len tokens are needed: what names where that comes from ("data.seq_len + 1"). */
static qat_status load_tokens(const char *path, const char *key, int vocab, int64_t min_len,
                              const char *what, int32_t **out, int64_t *n) {
  qat_status st = qat_npy_read_tokens(path, out, n);
  if (st != QAT_OK) return qat_context(st, "%s", key);
  for (int64_t i = 0; i < *n; i++)
    if ((*out)[i] >= vocab)
      return QAT_FAIL(QAT_EINVAL, "%s: %s: token %d at %lld is outside the model's vocabulary (%d)",
                      key, path, (*out)[i], (long long)i, vocab);
  if (*n < min_len)
    return QAT_FAIL(QAT_EINVAL, "%s: %s has %lld tokens; %s = %lld needed", key, path,
                    (long long)*n, what, (long long)min_len);
  return QAT_OK;
}

/* ---- checkpoints: trainable tensors, optimizer moments and the loop state */

/* Rank 0 writes (every rank holds the same state: gradients are summed before the update); the
 * agreement after it makes a failed save stop every rank, and no rank runs ahead of a checkpoint
 * that is not complete (state.json last, then the rename: checkpoint.h). ZeRO-1: every rank
 * also writes its moments into rank 0's temporary directory before the commit (zero_ckpt.h). */
static qat_status save_ckpt_rank0(job *J, qat_ckpt_hook hook, void *ctx);

/* Windows of one optimizer step over all ranks (a checkpoint records it: resuming on another
 * world size must keep it). */
static int64_t step_windows(const job *J) {
  return (int64_t)J->dist->world * J->hp.accum * J->hp.batch;
}

static qat_status save_ckpt(job *J) {
  qat_zero_ckpt_ctx c = {J, 0};
  int sharded = J->opt.sharded;
  qat_status st = J->dist->rank == 0
                      ? save_ckpt_rank0(J, sharded ? qat_zero_ckpt_hook : NULL, &c)
                      : QAT_OK;
  if (sharded && !c.shared) { /* the ranks that did not run the hook meet rank 0's there */
    qat_status s2 = qat_zero_ckpt_share(J, NULL, st);
    if (st == QAT_OK) st = s2;
  }
  return agree(J, st);
}

static qat_status save_ckpt_rank0(job *J, qat_ckpt_hook hook, void *ctx) {
  const qat_config *cfg = J->cfg;
  qat_ckpt_writer w;
  qat_ckpt_writer_init(&w);
  qat_eqat_bufs bufs = {0}; /* host copies, alive until the save */
  qat_status st = QAT_OK;
  char name[160];
  for (int i = 0; st == QAT_OK && i < J->opt.n; i++) {
    const qat_param *p = &J->opt.params[i];
    const qat_tensor *ts[3] = {p->p, &J->opt.m[i], &J->opt.v[i]};
    const char *pre[3] = {"", "optim.m.", "optim.v."};
    for (int k = 0; st == QAT_OK && k < (J->opt.sharded ? 1 : 3); k++) {
      snprintf(name, sizeof name, "%s%s", pre[k], p->name);
      st = qat_eqat_ckpt_add_device(J->be, ts[k], name, &w, &bufs);
    }
  }
  if (st == QAT_OK && J->opt.sharded) /* the moments: each rank's optim-rank*.safetensors */
    st = qat_zero_ckpt_fields(J, &w);
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "step", J->step);
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "optim_t", J->opt.t);
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "sampler_seed", (int64_t)J->sampler.seed);
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "sampler_counter", (int64_t)J->sampler.counter);
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "bad_steps", J->bad_steps);
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "config_hash", (int64_t)qat_config_hash(cfg));
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "world", J->dist->world);
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "step_windows", step_windows(J));
  if (st == QAT_OK) st = qat_ckpt_set_str(&w, "method", qat_cfg_method_name(cfg->method));
  if (J->codes_frozen) { /* E2E-QP: the frozen codes, zero points and weights of every layer */
    if (st == QAT_OK) st = qat_eqat_ckpt_add_layers(J->m, 0, J->m->cfg.n_layers, 0, &w, &bufs);
    if (st == QAT_OK) st = qat_ckpt_set_str(&w, "phase", "e2e_qp");
  }
  char path[4096];
  if (st == QAT_OK)
    st = qat_ckpt_save_hook(cfg->checkpoint.dir, J->step_base + J->step, &w,
                            cfg->checkpoint.keep, hook, ctx, path, sizeof path);
  if (st == QAT_OK) qat_log("checkpoint: %s", path);
  qat_eqat_bufs_free(&bufs);
  qat_ckpt_writer_free(&w);
  return st;
}

static qat_status load_ckpt(job *J, const char *dir) {
  qat_ckpt ck;
  QAT_TRY(qat_ckpt_open(dir, &ck));
  qat_status st = QAT_OK;
  char name[160];
  float *buf = NULL;
  /* the world and the moments' layout first: a refusal names them, not a missing tensor */
  int64_t world = 1, win = 0; /* checkpoints before data parallelism: one rank */
  if (qat_ckpt_get_int(&ck, "world", &world) != QAT_OK) world = 1;
  /* another world resumes the same run when a step still takes the same windows (the sampler
   * hands them out by number, dist_train.h); ZeRO-1 moments are resharded (zero_ckpt.h) */
  if (world != J->dist->world && qat_ckpt_get_int(&ck, "step_windows", &win) != QAT_OK)
    st = QAT_FAIL(QAT_EUSAGE,
                  "%s was saved by a run of %lld rank%s but this job has %d: resume it on %lld "
                  "(the checkpoint does not record its windows per step)",
                  dir, (long long)world, world == 1 ? "" : "s", J->dist->world, (long long)world);
  else if (world != J->dist->world && win != step_windows(J))
    st = QAT_FAIL(QAT_EUSAGE,
                  "%s was saved by a run of %lld rank%s but this job has %d: resume it on %lld, "
                  "or with the same windows per step (world x batch x accumulation: %lld saved, "
                  "%lld here; train.global_batch keeps it across world sizes)",
                  dir, (long long)world, world == 1 ? "" : "s", J->dist->world, (long long)world,
                  (long long)win, (long long)step_windows(J));
  if (st == QAT_OK && world != J->dist->world)
    qat_log("resuming %s, saved on %lld rank%s, on %d", dir, (long long)world,
            world == 1 ? "" : "s", J->dist->world);
  if (st == QAT_OK) st = qat_zero_ckpt_check(J, &ck, dir);
  for (int i = 0; st == QAT_OK && i < J->opt.n; i++) {
    const qat_param *p = &J->opt.params[i];
    const qat_tensor *ts[3] = {p->p, &J->opt.m[i], &J->opt.v[i]};
    const char *pre[3] = {"", "optim.m.", "optim.v."};
    for (int k = 0; st == QAT_OK && k < (J->opt.sharded ? 1 : 3); k++) {
      free(buf);
      buf = malloc(qat_nbytes(ts[k]) + 1);
      snprintf(name, sizeof name, "%s%s", pre[k], p->name);
      st = buf ? qat_ckpt_read_f32(&ck, name, buf, ts[k]->ndim, ts[k]->shape)
               : QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
      if (st == QAT_OK) st = J->be->upload(J->be, ts[k]->data, buf, qat_nbytes(ts[k]));
    }
  }
  free(buf);
  if (st == QAT_OK && J->opt.sharded) st = qat_zero_ckpt_read(J, &ck, dir);
  int64_t v = 0, hash = 0;
  if (st == QAT_OK) st = qat_ckpt_get_int(&ck, "step", &J->step);
  if (st == QAT_OK) st = qat_ckpt_get_int(&ck, "optim_t", &J->opt.t);
  if (st == QAT_OK) st = qat_ckpt_get_int(&ck, "sampler_seed", &v);
  if (st == QAT_OK) J->sampler.seed = (uint64_t)v;
  if (st == QAT_OK) st = qat_ckpt_get_int(&ck, "sampler_counter", &v);
  if (st == QAT_OK) J->sampler.counter = (uint64_t)v;
  if (st == QAT_OK) st = qat_ckpt_get_int(&ck, "bad_steps", &v);
  if (st == QAT_OK) J->bad_steps = (int)v;
  if (st == QAT_OK && qat_ckpt_get_int(&ck, "config_hash", &hash) == QAT_OK &&
      (uint64_t)hash != qat_config_hash(J->cfg))
    qat_warn("resuming %s with a different config than the one it was saved with", dir);
  qat_ckpt_close(&ck);
  return st;
}

/* ---- one optimizer step */

/* T of the loop: E2E-QP (codes frozen) trains on e2e_qp.seq_len windows, method qat on
 * data.seq_len ones. */
static int loop_seq_len(const job *J) {
  return J->codes_frozen ? qat_config_e2e_seq_len(J->cfg) : J->cfg->data.seq_len;
}

/* This rank's a-th micro-batch of the step whose first window is number base (dist_train.h). */
static void fill_batch(job *J, int B, int T, uint64_t base, int a) {
  for (int b = 0; b < B; b++) {
    int64_t start = 0;
    uint64_t k = qat_dist_window(base, a, J->dist->world, J->dist->rank, B, b);
    /* cannot fail: ntrain >= T + 1 was checked at load */
    qat_window_at(J->sampler.seed, k, J->ntrain, T, &start);
    memcpy(J->tok + (int64_t)b * T, J->train + start, (size_t)T * 4);
    memcpy(J->tgt + (int64_t)b * T, J->train + start + 1, (size_t)T * 4);
  }
}

static qat_status micro_step(job *J, int B, int T, double scale, double *loss) {
  const qat_config *cfg = J->cfg;
  qat_llama *m = J->m;
  int64_t N = (int64_t)B * T, cnt = 0;
  QAT_TRY(qat_llama_forward(m, J->tok, B, T));
  if (cfg->distill.enabled) {
    /* the logits stay on the device: only the per-token losses come back */
    QAT_TRY(qat_llama_forward(J->teacher, J->tok, B, T));
    qat_tensor tg = qat_rows(&J->kd_targets, 0, N), ls = qat_rows(&J->kd_losses, 0, N);
    qat_tensor htg = qat_view1(J->tgt, QAT_I32, QAT_DEV_CPU, N);
    qat_tensor hls = qat_view1(J->kd_host, QAT_F32, QAT_DEV_CPU, N);
    QAT_TRY(qat_tensor_upload(J->be, &tg, &htg));
    QAT_TRY(QAT_OP(J->be, kd_xent, &m->logits, &J->teacher->logits, &tg,
                   (float)cfg->distill.temperature, (float)cfg->distill.alpha, (float)scale, &ls,
                   &m->dlogits));
    QAT_TRY(qat_tensor_download(J->be, &hls, &ls));
    double l = 0;
    for (int64_t i = 0; i < N; i++) l += J->kd_host[i];
    *loss += l * scale;
  } else {
    double l = 0;
    QAT_TRY(qat_llama_xent(m, J->tgt, (float)scale, &l, &cnt));
    *loss += l;
  }
  return qat_llama_backward(m);
}

static qat_status train_steps(job *J, qat_grad_buckets *gb);

/* The optimizer steps; with several ranks and whole moments the gradients are summed in
 * buckets of dist.bucket_mb overlapping the backward (train/grad_bucket.h). */
static qat_status train_loop(job *J) {
  if (J->dist->world == 1 || J->opt.sharded) return train_steps(J, NULL);
  qat_grad_buckets gb;
  QAT_TRY(qat_grad_buckets_init(&gb, J->dist, J->be, J->cfg->dist.grad_dtype,
                                J->cfg->dist.bucket_mb * 1048576.0));
  qat_status st = train_steps(J, &gb);
  if (gb.nb > 0)
    qat_log("gradient all-reduce: %d buckets of up to %lld elements per step, %s on the wire; "
            "%lld bytes in %lld buckets, %lld of them started during the backward",
            gb.nb, (long long)gb.cap, qat_dtype_name(gb.wire), (long long)gb.wire_bytes,
            (long long)gb.started, (long long)gb.early);
  J->m->bwd_hook = NULL;
  J->m->bwd_hook_ctx = NULL;
  qat_grad_buckets_free(&gb);
  return st;
}

static qat_status eval_val(job *J, qat_llama *m, qat_eval_result *r) {
  const qat_config *cfg = J->cfg;
  return qat_eval_ppl(m, J->val, J->nval, cfg->data.seq_len, cfg->train.eval_windows,
                      cfg->train.batch, r);
}

static void metric(job *J, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void metric(job *J, const char *fmt, ...) {
  if (!J->metrics) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(J->metrics, fmt, ap);
  va_end(ap);
  fputc('\n', J->metrics);
  fflush(J->metrics);
}

static qat_status train_steps(job *J, qat_grad_buckets *gb) {
  const qat_config *cfg = J->cfg;
  int B = J->hp.batch, T = loop_seq_len(J), A = J->hp.accum, W = J->dist->world;
  int64_t total = J->hp.steps;
  double scale = 1.0 / ((double)B * T * A * W); /* the loss is a mean over the global batch */
  qat_progress pr;
  qat_progress_start(&pr, "train", total);
  pr.done = J->step;
  double t_last = qat_now();
  int64_t tok_since = 0;
  while (J->step < total) {
    QAT_TRY(qat_llama_zero_grad(J->m));
    double loss = 0;
    uint64_t base = J->sampler.counter;
    for (int a = 0; a < A; a++) {
      fill_batch(J, B, T, base, a);
      /* the last micro-batch's backward starts each bucket of the gradient sum once its layers
       * are final; the earlier ones only accumulate */
      if (gb && a == A - 1) QAT_TRY(qat_grad_buckets_begin(gb, J->m));
      QAT_TRY(micro_step(J, B, T, scale, &loss));
    }
    J->sampler.counter = base + (uint64_t)W * A * B;
    /* the sum over ranks of dL/dw_hat (before the fake-quant backward, which is linear in it),
     * the global loss and whether any rank was asked to stop: every rank decides alike.
     * ZeRO-1 sums the parameters' gradients after it instead, each rank receiving its shard,
     * and the norm from the shards' sums of squares (zero.h) */
    int zero = J->opt.sharded;
    if (gb) QAT_TRY(qat_grad_buckets_finish(gb, J->m));
    double red[3] = {loss, g_stop ? 1.0 : 0.0, 0};
    if (!zero) QAT_TRY(J->dist->allreduce_f64(J->dist, red, 2, QAT_RED_SUM));
    QAT_TRY(qat_llama_finish_backward(J->m));
    double norm = 0;
    if (zero) {
      QAT_TRY(qat_zero_reduce_grads(&J->zero, J->dist, &J->opt));
      QAT_TRY(qat_optim_grad_sumsq(&J->opt, &red[2]));
      QAT_TRY(J->dist->allreduce_f64(J->dist, red, 3, QAT_RED_SUM));
      norm = sqrt(red[2]);
    } else {
      QAT_TRY(qat_optim_grad_norm(&J->opt, &norm));
    }
    loss = red[0];
    int stop = red[1] > 0;
    if (!isfinite(loss) || !isfinite(norm)) {
      J->bad_steps++;
      qat_warn("step %lld: non-finite %s (%g, grad norm %g): step skipped (%d in a row)",
               (long long)J->step + 1, isfinite(loss) ? "gradient" : "loss", loss, norm,
               J->bad_steps);
      J->agreed = 1; /* loss and gradients were summed: every rank counts the same */
      if (J->bad_steps >= cfg->train.max_bad_steps)
        return QAT_FAIL(QAT_EINVAL,
                        "%d non-finite steps in a row (train.max_bad_steps): stopping; the last "
                        "good checkpoint in %s is kept",
                        J->bad_steps, cfg->checkpoint.dir);
      J->agreed = 0;
      J->step++; /* the step is consumed: data and schedule move on */
      continue;
    }
    J->bad_steps = 0;
    if (J->hp.clip > 0 && norm > J->hp.clip)
      QAT_TRY(qat_optim_scale_grads(&J->opt, (float)(J->hp.clip / norm)));
    double lr[3];
    lr[QAT_PG_WEIGHT] = qat_lr_at(cfg->train.schedule, J->hp.lr, J->step, total, J->hp.warmup,
                                  cfg->train.min_lr_ratio);
    lr[QAT_PG_QUANT] = qat_lr_at(cfg->train.schedule, J->hp.lr_quant, J->step, total,
                                 J->hp.warmup, cfg->train.min_lr_ratio);
    lr[QAT_PG_OTHER] = lr[QAT_PG_WEIGHT];
    QAT_TRY(qat_optim_step(&J->opt, lr));
    if (zero) QAT_TRY(qat_zero_gather_params(&J->zero, J->dist, &J->opt));
    J->step++;
    tok_since += (int64_t)B * T * A * W;
    double now = qat_now(), rate = tok_since / fmax(now - t_last, 1e-9);
    metric(J, "{\"step\": %lld, \"loss\": %.6f, \"grad_norm\": %.6g, \"lr\": %.6g, "
              "\"lr_quant\": %.6g, \"tokens_per_s\": %.1f}",
           (long long)J->step, loss, norm, lr[0], lr[1], rate);
    char extra[160];
    snprintf(extra, sizeof extra, "loss %.4f  lr %.2e  %.0f tok/s", loss,
             J->codes_frozen ? lr[QAT_PG_QUANT] : lr[QAT_PG_WEIGHT], rate);
    qat_progress_update(&pr, J->step, extra);
    if (cfg->train.eval_every > 0 && J->step % cfg->train.eval_every == 0 && J->step < total) {
      qat_eval_result r;
      qat_log_level_push_quiet();
      qat_status st = eval_val(J, J->m, &r);
      qat_log_level_pop();
      QAT_TRY(st);
      QAT_TRY(qat_llama_plan(J->m, B, T, 1)); /* eval re-planned the activations */
      qat_log("step %lld: val nll %.4f ppl %.3f", (long long)J->step, r.nll, r.ppl);
      metric(J, "{\"step\": %lld, \"val_nll\": %.6f, \"val_ppl\": %.6f}", (long long)J->step,
             r.nll, r.ppl);
    }
    int last = J->step == total;
    if (last || stop || (cfg->checkpoint.every > 0 && J->step % cfg->checkpoint.every == 0))
      QAT_TRY(save_ckpt(J));
    if (stop && !last) {
      qat_progress_end(&pr, "interrupted");
      return QAT_FAIL(QAT_EINTERRUPT, "interrupted at step %lld: checkpoint saved in %s",
                      (long long)J->step, cfg->checkpoint.dir);
    }
    t_last = now;
    tok_since = 0;
  }
  qat_progress_end(&pr, NULL);
  return QAT_OK;
}

/* ---- the final table */

static qat_status final_table(job *J) {
  const qat_config *cfg = J->cfg;
  qat_eval_result fp = J->ref_fp, rtn = J->ref_rtn, tr = {0};
  qat_status st = QAT_OK;
  if (J->have_ref) { /* fp and RTN were evaluated before training (eqat_ref_rows) */
    qat_log("evaluating on %s (trained)...", cfg->data.val);
    qat_log_level_push_quiet();
  } else {
    qat_log("evaluating on %s (fp, RTN, trained)...", cfg->data.val);
    qat_log_level_push_quiet();
    st = eval_val(J, J->teacher, &fp);
    if (st == QAT_OK) st = qat_llama_set_quant(J->teacher, &J->q);
    if (st == QAT_OK) st = eval_val(J, J->teacher, &rtn);
    if (st == QAT_OK) st = qat_llama_set_quant(J->teacher, NULL);
  }
  if (st == QAT_OK) st = eval_val(J, J->m, &tr);
  qat_log_level_pop();
  QAT_TRY(st);
  double gap = rtn.nll - fp.nll, rec = gap > 0 ? (rtn.nll - tr.nll) / gap : 0;
  if (J->dist->rank != 0) return QAT_OK; /* every rank evaluated the same model: rank 0 reports */
  printf("\n%-10s %10s %10s   (W%d g%d %s, %lld val tokens)\n", "model", "val nll", "val ppl",
         J->q.bits, J->q.group, J->q.sym ? "sym" : "asym", (long long)tr.tokens);
  printf("%-10s %10.4f %10.3f\n", "fp", fp.nll, fp.ppl);
  printf("%-10s %10.4f %10.3f\n", "rtn", rtn.nll, rtn.ppl);
  const char *row = cfg->method == QAT_METHOD_QAT    ? "qat"
                    : cfg->method == QAT_METHOD_GPTQ ? "gptq"
                                                     : "eqat";
  printf("%-10s %10.4f %10.3f\n", row, tr.nll, tr.ppl);
  printf("recovered %.1f%% of RTN's gap in log-perplexity\n", 100 * rec);
  char buf[1024], path[4096];
  snprintf(buf, sizeof buf,
           "{\"fp\": {\"nll\": %.6f, \"ppl\": %.6f}, \"rtn\": {\"nll\": %.6f, \"ppl\": %.6f}, "
           "\"qat\": {\"nll\": %.6f, \"ppl\": %.6f}, \"recovered\": %.4f, \"bits\": %d, "
           "\"group\": %d, \"sym\": %s, \"val_tokens\": %lld, \"steps\": %lld}\n",
           fp.nll, fp.ppl, rtn.nll, rtn.ppl, tr.nll, tr.ppl, rec, J->q.bits, J->q.group,
           J->q.sym ? "true" : "false", (long long)tr.tokens, (long long)(J->step_base + J->step));
  QAT_TRY(qat_path_join(path, sizeof path, cfg->checkpoint.dir, "results.json"));
  QAT_TRY(qat_write_file_atomic(path, buf, strlen(buf)));
  buf[strcspn(buf, "\n")] = 0;
  metric(J, "{\"final\": %s}", buf);
  return QAT_OK;
}

/* ---- setup */

/* ---- the memory check at start */

/* EfficientQAT methods load a teacher only for E2E-QP's distillation (Block-AP's targets come
 * from the student's own masters; the final table's fp and RTN rows from the student before it
 * trains). */
static int eqat_teacher(const qat_config *cfg) {
  return cfg->distill.enabled &&
         (cfg->method == QAT_METHOD_E2E_QP || cfg->method == QAT_METHOD_PIPELINE);
}


typedef struct mem_need {
  const char *phase;
  double model, teacher, cache, optim; /* bytes */
  double zero;                          /* ZeRO-1's communication buffers */
  double buckets;                       /* the gradient all-reduce's staging (grad_bucket.h) */
} mem_need;

static double mem_sum(const mem_need *n) {
  return n->model + n->teacher + n->cache + n->optim + n->zero + n->buckets;
}

/* Optimizer moments (2 x F32) of layer l's Linear weights (weights != 0), step sizes (scales)
 * and zero points (zeros, asym only). */
static double moments_layer(const qat_llama_config *c, const qat_qspec *q, int weights,
                            int scales, int zeros) {
  int64_t C = c->dim, F = c->hidden, qd = (int64_t)c->n_heads * c->head_dim,
          kvd = (int64_t)c->n_kv_heads * c->head_dim;
  const int64_t shp[7][2] = {{qd, C}, {kvd, C}, {kvd, C}, {C, qd}, {F, C}, {F, C}, {C, F}};
  double n = 0;
  for (int i = 0; i < 7; i++) {
    int64_t ss[2];
    qat_qspec_sshape(q, shp[i][0], shp[i][1], ss);
    n += weights ? (double)shp[i][0] * shp[i][1] : 0;
    n += scales ? (double)ss[0] * ss[1] : 0;
    n += zeros && !q->sym ? (double)ss[0] * ss[1] : 0;
  }
  return 8.0 * n;
}

/* dist.zero = 1: a rank holds 1 / W of the whole-model moments (one padded shard) and the
 * reduce-scatter / all-gather buckets: (W + 1) x bucket F32 (train/zero.h). Otherwise, with
 * several ranks, the gradient all-reduce stages QAT_GB_SLOTS buckets (at most the gradients'
 * size, bounded here by the trainable values'). */
static void zero_share(const qat_config *cfg, int64_t W, mem_need *n) {
  if (!cfg->dist.zero && W > 1) { /* whole moments: QAT_GB_SLOTS staged buckets of gradients */
    double grads = n->optim / 8.0, cap = cfg->dist.bucket_mb * 1048576.0 / 4.0;
    n->buckets = QAT_GB_SLOTS * (cap < grads ? cap : grads) *
                 (double)qat_dtype_size(cfg->dist.grad_dtype);
  }
  if (!cfg->dist.zero || W <= 1) return;
  int64_t flat = (int64_t)(n->optim / 8.0), shard = (flat + W - 1) / W;
  n->optim = 8.0 * (double)shard;
  n->zero = (double)qat_zero_buffer_bytes(flat, (int)W, cfg->dist.zero_bucket_mb * 1048576.0);
}

static qat_status est(const qat_llama_config *c, const qat_llama_mem_job *j, double *out) {
  qat_llama_mem mm;
  QAT_TRY(qat_llama_memory_estimate(c, j, &mm));
  *out = (double)mm.total;
  return QAT_OK;
}

qat_status qat_train_check_memory(const qat_config *cfg, const qat_backend *be,
                                  const qat_qspec *q, int world) {
  /* Block-AP and GPTQ shard their samples across ranks: a rank caches at most ceil(n / W) */
  const int64_t W = world > 1 ? world : 1;
  qat_llama_config c;
  QAT_TRY(qat_llama_config_load(cfg->model, &c));
  qat_dtype act = be->device == QAT_DEV_CUDA ? QAT_BF16 : QAT_F32; /* qat_llama_load's */
  int T = cfg->data.seq_len, Te = qat_config_e2e_seq_len(cfg), L = c.n_layers;
  int qat = cfg->method == QAT_METHOD_QAT;
  int do_bap = cfg->method == QAT_METHOD_BLOCK_AP || cfg->method == QAT_METHOD_PIPELINE;
  int do_e2e = cfg->method == QAT_METHOD_E2E_QP || cfg->method == QAT_METHOD_PIPELINE;
  mem_need ph[2];
  int nph = 0;
  if (qat) {
    mem_need *n = &ph[nph++];
    *n = (mem_need){.phase = "QAT"};
    qat_llama_mem_job js = {.act_dtype = act, .qspec = q, .B = cfg->train.batch, .T = T,
                            .training = 1, .recompute = cfg->train.recompute};
    qat_llama_mem_job jt = {.act_dtype = act, .B = cfg->distill.enabled ? cfg->train.batch : 0,
                            .T = T};
    QAT_TRY(est(&c, &js, &n->model));
    QAT_TRY(est(&c, &jt, &n->teacher)); /* always loaded: the fp and RTN rows */
    int scales_only = cfg->quant.train == QAT_TRAIN_SCALES;
    int train_q = cfg->quant.grad != QAT_CFG_GRAD_STE;
    n->optim = L * moments_layer(&c, q, !scales_only, train_q, train_q);
    zero_share(cfg, W, n);
  } else if (cfg->method == QAT_METHOD_GPTQ) {
    mem_need *n = &ph[nph++];
    *n = (mem_need){.phase = "GPTQ"};
    int Bb = cfg->gptq.batch < cfg->gptq.samples ? cfg->gptq.batch : cfg->gptq.samples;
    qat_llama_mem_job js = {.act_dtype = act, .qspec = q, .block_B = Bb, .block_T = T,
                            .frozen_codes = 1};
    QAT_TRY(est(&c, &js, &n->model));
    /* one cache set of [T, C] slots (at most its device budget), 2 [Bb*T, C] F32 buffers, the
     * tokens, a BF16 staging buffer, and the four input second-moment matrices (gptq_run.c) */
    double esz = (double)qat_dtype_size(cfg->block_ap.cache_dtype);
    double set = (double)((cfg->gptq.samples + W - 1) / W) * T * c.dim * esz;
    double dev = (double)((size_t)cfg->block_ap.cache_device_mb << 20);
    double qd = (double)c.n_heads * c.head_dim;
    n->cache = (set < dev ? set : dev) + 2.0 * Bb * T * c.dim * 4 + 4.0 * Bb * T +
               (cfg->block_ap.cache_dtype == QAT_BF16 ? (double)Bb * T * c.dim * esz : 0) +
               4.0 * (2.0 * c.dim * c.dim + qd * qd + (double)c.hidden * c.hidden);
  } else {
    double teacher = 0;
    if (eqat_teacher(cfg)) { /* held from the start; planned for E2E-QP's batches */
      qat_llama_mem_job jt = {.act_dtype = act, .drop_masters = 1};
      QAT_TRY(est(&c, &jt, &teacher));
    }
    if (do_bap) {
      mem_need *n = &ph[nph++];
      *n = (mem_need){.phase = "Block-AP", .teacher = teacher};
      int Bb = cfg->block_ap.batch;
      qat_llama_mem_job js = {.act_dtype = act, .qspec = q, .block_B = Bb, .block_T = T,
                              .block_training = 1, .frozen_codes = 1};
      QAT_TRY(est(&c, &js, &n->model));
      /* the cache's 3 sets of [T, C] slots (block_ap.cache_dtype: 2 bytes BF16, 4 F32), at
       * most its device budget, + 4 [Bb*T, C] F32 buffers, the tokens and, for a BF16 cache, a
       * [Bb*T, C] BF16 staging buffer (block_ap.c) */
      double esz = (double)qat_dtype_size(cfg->block_ap.cache_dtype);
      int64_t nv = cfg->block_ap.val_samples > 0 ? cfg->block_ap.val_samples : 0;
      double sets = 3.0 * (double)((cfg->block_ap.samples + W - 1) / W + (nv + W - 1) / W) * T *
                    c.dim * esz;
      double dev = (double)((size_t)cfg->block_ap.cache_device_mb << 20);
      double stage = cfg->block_ap.cache_dtype == QAT_BF16 ? (double)Bb * T * c.dim * esz : 0;
      n->cache = (sets < dev ? sets : dev) + 4.0 * Bb * T * c.dim * 4 + 4.0 * Bb * T + stage;
      n->optim = moments_layer(&c, q, 1, 1, 1); /* one block at a time */
    }
    if (do_e2e) {
      mem_need *n = &ph[nph++];
      *n = (mem_need){.phase = "E2E-QP"};
      qat_llama_mem_job js = {.act_dtype = act, .qspec = q, .B = cfg->e2e_qp.batch, .T = Te,
                              .training = 1, .recompute = cfg->train.recompute,
                              .frozen_codes = 1, .packed_codes = cfg->e2e_qp.packed};
      QAT_TRY(est(&c, &js, &n->model));
      if (cfg->e2e_qp.packed && do_bap) { /* Block-AP's U8 codes beside the packed ones while
                                            * E2E-QP packs them (the compute weights gone) */
        qat_llama_mem u8, pk;
        QAT_TRY(qat_llama_memory_estimate(&c, &js, &pk));
        js.packed_codes = 0;
        QAT_TRY(qat_llama_memory_estimate(&c, &js, &u8));
        double peak = (double)(u8.params + u8.qstate + u8.codes + pk.codes);
        if (peak > n->model) n->model = peak;
      }
      if (eqat_teacher(cfg)) {
        qat_llama_mem_job jt = {.act_dtype = act, .B = cfg->e2e_qp.batch, .T = Te,
                                .drop_masters = 1};
        QAT_TRY(est(&c, &jt, &n->teacher));
      }
      n->optim = L * moments_layer(&c, q, 0, 1, 0); /* step sizes only */
      zero_share(cfg, W, n);
    }
  }
  size_t free_b = 0, total_b = 0;
  qat_status st = QAT_OP(be, mem_info, &free_b, &total_b);
  const double GB = 1e9;
  char line[512];
  int k = 0;
  for (int i = 0; i < nph; i++) {
    char zb[80] = "";
    if (ph[i].zero > 0)
      snprintf(zb, sizeof zb, " (1/%lld: ZeRO-1), ZeRO-1 buffers %.2f", (long long)W,
               ph[i].zero / GB);
    else if (ph[i].buckets > 0)
      snprintf(zb, sizeof zb, ", gradient buckets %.2f", ph[i].buckets / GB);
    k += snprintf(line + k, sizeof line - (size_t)k,
                  "%s%s %.2f GB (model %.2f, teacher %.2f, activation cache %.2f, "
                  "optimizer %.2f%s)",
                  i ? "; " : "", ph[i].phase, mem_sum(&ph[i]) / GB, ph[i].model / GB,
                  ph[i].teacher / GB, ph[i].cache / GB, ph[i].optim / GB, zb);
  }
  if (st != QAT_OK) {
    qat_warn("memory: %s needs %s; free %s memory unknown, not checked", be->name, line, be->name);
    return QAT_OK;
  }
  qat_log("memory: %s; %.2f GB free of %.2f GB on %s", line, free_b / GB, total_b / GB, be->name);
  for (int i = 0; i < nph; i++)
    if (mem_sum(&ph[i]) > (double)free_b)
      return QAT_FAIL(QAT_ENOMEM,
                      "not enough %s memory for %s: needs %.2f GB (model %.2f GB, teacher %.2f "
                      "GB, activation cache %.2f GB, optimizer %.2f GB) but %.2f GB are free of "
                      "%.2f GB",
                      be->name, ph[i].phase, mem_sum(&ph[i]) / GB, ph[i].model / GB,
                      ph[i].teacher / GB, ph[i].cache / GB, ph[i].optim / GB, free_b / GB,
                      total_b / GB);
  return QAT_OK;
}

/* One context length against the model (before anything is loaded, so that E2E-QP's length
 * is refused before Block-AP runs for hours): longer than max_position_embeddings, or than a
 * sliding window (not implemented: qat_llama_plan_check would refuse it at plan time). */
static qat_status check_seq_len(const qat_llama_config *c, const char *key, int T) {
  if (T > c->max_seq)
    return QAT_FAIL(QAT_EUSAGE, "%s = %d exceeds the model's max_position_embeddings %d", key, T,
                    c->max_seq);
  if (c->sliding_window > 0 && T > c->sliding_window)
    return QAT_FAIL(QAT_EUSAGE,
                    "%s = %d exceeds the model's sliding_window %d (sliding-window attention is "
                    "not implemented)",
                    key, T, c->sliding_window);
  return QAT_OK;
}

/* data.seq_len (every method: evaluation, QAT, Block-AP) and, for methods that run E2E-QP,
 * e2e_qp.seq_len; *train_need = the tokens the longest training window needs. */
static qat_status check_seq_lens(const qat_config *cfg, int64_t *train_need, const char **what) {
  qat_llama_config c;
  QAT_TRY(qat_llama_config_load(cfg->model, &c));
  int T = cfg->data.seq_len, Te = qat_config_e2e_seq_len(cfg);
  int e2e_only = cfg->method == QAT_METHOD_E2E_QP;
  int do_e2e = e2e_only || cfg->method == QAT_METHOD_PIPELINE;
  QAT_TRY(check_seq_len(&c, "data.seq_len", T));
  if (do_e2e && cfg->e2e_qp.seq_len > 0) QAT_TRY(check_seq_len(&c, "e2e_qp.seq_len", Te));
  /* packed codes need whole groups in every Linear (refused here, not after Block-AP) */
  int64_t ins[3] = {c.dim, (int64_t)c.n_heads * c.head_dim, c.hidden};
  for (int i = 0; i < 3 && do_e2e && cfg->e2e_qp.packed && cfg->quant.group > 0; i++)
    if (ins[i] % cfg->quant.group != 0)
      return QAT_FAIL(QAT_EUSAGE, "e2e_qp.packed: quant.group %d does not divide the model's "
                                  "Linear input width %lld (packed codes need whole groups)",
                      cfg->quant.group, (long long)ins[i]);
  int use_e2e = do_e2e && cfg->e2e_qp.seq_len > 0 && (e2e_only || Te > T);
  *train_need = (int64_t)(use_e2e ? Te : T) + 1;
  *what = use_e2e ? "e2e_qp.seq_len + 1" : "data.seq_len + 1";
  return QAT_OK;
}

/* Everything every method needs: files, backend, the models, tokens, the student quantized
 * (RTN init; EfficientQAT methods: in eqat_run, after the fp row is evaluated). Nothing is
 * written before this succeeds. */
static qat_status setup_common(job *J) {
  const qat_config *cfg = J->cfg;
  int qat = cfg->method == QAT_METHOD_QAT;
  QAT_TRY(qat_config_check_files(cfg));
  QAT_TRY(qat_backend_by_name(cfg->device == QAT_DEV_CUDA ? "cuda" : "cpu", &J->be));
  J->q = (qat_qspec){.bits = cfg->quant.bits, .group = cfg->quant.group, .sym = cfg->quant.sym,
                     .grad = grad_mode(cfg->quant.grad),
                     .init = cfg->quant.init == QAT_CFG_INIT_MSE ? QAT_QINIT_MSE
                                                                 : QAT_QINIT_MINMAX,
                     .scale_f16 = cfg->quant.scale_dtype == QAT_F16};
  QAT_TRY(qat_qspec_check(&J->q));
  int64_t train_need = 0;
  const char *train_what = NULL;
  QAT_TRY(qat_llama_check_dir(cfg->model, NULL)); /* before any size is taken from config.json */
  QAT_TRY(check_seq_lens(cfg, &train_need, &train_what));
  QAT_TRY(qat_train_check_memory(cfg, J->be, &J->q, J->dist->world));
  if (!qat && eqat_teacher(cfg)) {
    /* loaded first, so that its transient F32 masters never sit beside the student's */
    size_t dropped = 0;
    QAT_TRY(qat_llama_load(cfg->model, J->be, &J->teacher));
    QAT_TRY(qat_llama_drop_masters(J->teacher, &dropped));
    if (dropped)
      qat_log("distillation teacher: %.2f GB of F32 masters dropped (%s compute weights kept)",
              dropped / 1e9, qat_dtype_name(J->teacher->act_dtype));
  }
  QAT_TRY(qat_llama_load(cfg->model, J->be, &J->m));
  if (qat) QAT_TRY(qat_llama_load(cfg->model, J->be, &J->teacher));
  QAT_TRY(load_tokens(cfg->data.train, "data.train", J->m->cfg.vocab, train_need, train_what,
                      &J->train, &J->ntrain));
  QAT_TRY(load_tokens(cfg->data.val, "data.val", J->m->cfg.vocab, cfg->data.seq_len,
                      "data.seq_len", &J->val, &J->nval));
  J->m->train_embeddings = 0;
  if (qat) QAT_TRY(qat_llama_set_quant(J->m, &J->q));
  return QAT_OK;
}

/* The loop's activations, optimizer over params with groups, host buffers and the sampler. */
static qat_status setup_loop(job *J, qat_param *params, int nparams,
                             const qat_optim_group groups[3]) {
  const qat_config *cfg = J->cfg;
  int T = loop_seq_len(J), B = J->hp.batch;
  J->m->recompute = cfg->train.recompute;
  QAT_TRY(qat_llama_plan(J->m, B, T, 1));
  if (cfg->distill.enabled) QAT_TRY(qat_llama_plan(J->teacher, B, T, 0));
  if (cfg->dist.zero) {
    QAT_TRY(qat_optim_init_shard(&J->opt, J->be, params, nparams, groups, J->dist->rank,
                                 J->dist->world));
    double bucket = cfg->dist.zero_bucket_mb * 1048576.0;
    QAT_TRY(qat_zero_init(&J->zero, &J->opt, J->dist, bucket));
    qat_log("optimizer: ZeRO-1, %lld parameters in %d shards of %lld: %zu bytes of moments on "
            "this rank, %zu of gradient / parameter buckets (%lld elements per rank)",
            (long long)J->opt.flat_n, J->dist->world, (long long)J->opt.shard,
            qat_optim_moment_bytes(&J->opt),
            qat_zero_buffer_bytes(J->opt.flat_n, J->dist->world, bucket),
            (long long)J->zero.bucket);
  } else {
    QAT_TRY(qat_optim_init(&J->opt, J->be, params, nparams, groups));
    qat_log("optimizer: %zu bytes of moments on this rank", qat_optim_moment_bytes(&J->opt));
  }
  J->opt.scale_f16 = J->q.scale_f16; /* quant.scale_dtype f16: s projected after every step */
  size_t N = (size_t)B * T;
  J->tok = malloc(N * 4);
  J->tgt = malloc(N * 4);
  if (!J->tok || !J->tgt) return QAT_FAIL(QAT_ENOMEM, "train: out of memory");
  if (cfg->distill.enabled) {
    J->kd_host = malloc(N * 4);
    if (!J->kd_host) return QAT_FAIL(QAT_ENOMEM, "train: out of memory");
    QAT_TRY(qat_arena_init(&J->kd_arena, J->be, "distillation targets and losses",
                           qat_arena_need(QAT_I32, (int64_t)N) + qat_arena_need(QAT_F32, (int64_t)N)));
    QAT_TRY(qat_arena_tensor(&J->kd_arena, &J->kd_targets, QAT_I32, 1, (int64_t[]){(int64_t)N},
                             "kd targets"));
    QAT_TRY(qat_arena_tensor(&J->kd_arena, &J->kd_losses, QAT_F32, 1, (int64_t[]){(int64_t)N},
                             "kd losses"));
  }
  qat_window_sampler_init(&J->sampler, (uint64_t)cfg->train.seed);
  return QAT_OK;
}

static qat_status setup(job *J) {
  const qat_config *cfg = J->cfg;
  QAT_TRY(setup_common(J));
  if (cfg->method != QAT_METHOD_QAT) return QAT_OK; /* eqat_run continues */
  J->hp = (qat_train_hyper){.steps = cfg->train.steps, .batch = cfg->train.batch,
                            .accum = 0, .lr = cfg->train.lr,
                            .lr_quant = cfg->train.lr_quant, .warmup = cfg->train.warmup,
                            .clip = cfg->train.clip};
  QAT_TRY(qat_dist_train_accum(cfg, J->dist->world, &J->hp.accum));
  int scales_only = cfg->quant.train == QAT_TRAIN_SCALES;
  for (int l = 0; l < J->m->cfg.n_layers; l++) {
    qat_llama_layer *L = &J->m->layers[l];
    qat_linear *lins[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
    for (int i = 0; i < 7; i++) lins[i]->frozen = scales_only;
  }
  qat_optim_group groups[3] = {
      [QAT_PG_WEIGHT] = {cfg->train.lr, cfg->train.weight_decay, !scales_only},
      [QAT_PG_QUANT] = {cfg->train.lr_quant, 0.0, cfg->quant.grad != QAT_CFG_GRAD_STE},
      [QAT_PG_OTHER] = {cfg->train.lr, cfg->train.weight_decay, 0},
  };
  if (!groups[0].enabled && !groups[1].enabled)
    return QAT_FAIL(QAT_EUSAGE, "quant.train = scales with quant.grad = ste leaves nothing to train");
  return setup_loop(J, J->m->params, J->m->nparams, groups);
}

/* The newest checkpoint to resume from (path "" and -1 when none), per checkpoint.resume. */
static qat_status find_ckpt(job *J, char *ck, size_t n, int64_t *ckstep) {
  const qat_config *cfg = J->cfg;
  ck[0] = 0;
  *ckstep = -1;
  if (cfg->checkpoint.resume != QAT_RESUME_NEVER)
    QAT_TRY(qat_ckpt_latest(cfg->checkpoint.dir, ck, n, ckstep));
  if (cfg->checkpoint.resume == QAT_RESUME_MUST && *ckstep < 0)
    return QAT_FAIL(QAT_EUSAGE, "checkpoint.resume = must but %s holds no checkpoint",
                    cfg->checkpoint.dir);
  return QAT_OK;
}

/* Creates the run directory, saves the effective config, opens metrics.jsonl. */
static qat_status open_run_dir(job *J) {
  const qat_config *cfg = J->cfg;
  char path[4096];
  if (J->dist->rank != 0) return QAT_OK; /* rank 0 writes the shared files */
  QAT_TRY(qat_mkdir_p(cfg->checkpoint.dir));
  QAT_TRY(qat_path_join(path, sizeof path, cfg->checkpoint.dir, "config.yaml"));
  QAT_TRY(qat_config_save(cfg, path));
  QAT_TRY(qat_path_join(path, sizeof path, cfg->checkpoint.dir, "metrics.jsonl"));
  J->metrics = fopen(path, "a");
  if (!J->metrics) return QAT_FAIL(QAT_EIO, "%s: cannot open for appending", path);
  return QAT_OK;
}

static qat_status start_run_dir(job *J) {
  char ck[4096];
  int64_t ckstep = -1;
  QAT_TRY(find_ckpt(J, ck, sizeof ck, &ckstep));
  if (ckstep >= 0) {
    QAT_TRY(load_ckpt(J, ck));
    qat_log("resumed from %s (step %lld)", ck, (long long)J->step);
  }
  return open_run_dir(J);
}

/* ---- EfficientQAT: block_ap, e2e_qp, pipeline (train/eqat.h) */

/* The final table's fp and RTN rows from the student itself, before anything trains or a
 * checkpoint is loaded (same ops as on a separate full-precision model), then fake-quant on. */
static qat_status eqat_ref_rows(job *J) {
  qat_log("evaluating on %s (fp, RTN)...", J->cfg->data.val);
  qat_log_level_push_quiet();
  qat_status st = eval_val(J, J->m, &J->ref_fp);
  if (st == QAT_OK) st = qat_llama_set_quant(J->m, &J->q);
  if (st == QAT_OK) st = eval_val(J, J->m, &J->ref_rtn);
  qat_log_level_pop();
  qat_llama_unplan(J->m, 1, 0); /* the evaluation's activations */
  QAT_TRY(st);
  J->have_ref = 1;
  return QAT_OK;
}

/* Layers [0, n) of a checkpoint into the student; with e2e_qp.packed the codes are packed
 * first (no U8 codes arena beside the compute weights: qat_llama_pack_frozen). */
static qat_status load_frozen(job *J, int n, const qat_ckpt *c) {
  int e2e = J->cfg->method == QAT_METHOD_E2E_QP || J->cfg->method == QAT_METHOD_PIPELINE;
  if (J->cfg->e2e_qp.packed && e2e && n == J->m->cfg.n_layers)
    QAT_TRY(qat_context(qat_llama_pack_frozen(J->m), "e2e_qp.packed"));
  return qat_eqat_ckpt_load_layers(J->m, 0, n, c);
}

static qat_status eqat_run(job *J) {
  const qat_config *cfg = J->cfg;
  int L = J->m->cfg.n_layers;
  QAT_TRY(eqat_ref_rows(J));
  int do_bap = cfg->method == QAT_METHOD_BLOCK_AP || cfg->method == QAT_METHOD_PIPELINE;
  int do_e2e = cfg->method == QAT_METHOD_E2E_QP || cfg->method == QAT_METHOD_PIPELINE;
  /* a Block-AP step sees world x grad_accum x batch samples */
  int per_step = cfg->block_ap.batch * cfg->block_ap.grad_accum * J->dist->world;
  int64_t spb = do_bap ? qat_block_ap_steps_per_block(cfg->block_ap.samples, per_step,
                                                      cfg->block_ap.epochs)
                       : 0;
  J->step_base = spb * L;
  /* where a previous run stopped: inside Block-AP (blocks done) or inside E2E-QP (steps) */
  char ck[4096];
  int64_t ckstep = -1, blocks_done = 0;
  int e2e_resume = 0;
  QAT_TRY(find_ckpt(J, ck, sizeof ck, &ckstep));
  if (ckstep >= 0) {
    qat_ckpt c;
    QAT_TRY(qat_ckpt_open(ck, &c));
    const char *phase = "";
    int64_t hash = 0;
    qat_status st = qat_ckpt_get_str(&c, "phase", &phase);
    int64_t world = 1; /* checkpoints before data parallelism: one rank */
    if (st == QAT_OK && qat_ckpt_get_int(&c, "world", &world) != QAT_OK) world = 1;
    if (st == QAT_OK && strcmp(phase, "block_ap") == 0 && world != J->dist->world)
      st = QAT_FAIL(QAT_EUSAGE,
                    "%s was saved by a run of %lld rank%s but this job has %d: resume it on %lld "
                    "(resharding is not supported)",
                    ck, (long long)world, world == 1 ? "" : "s", J->dist->world, (long long)world);
    if (st == QAT_OK && strcmp(phase, "block_ap") == 0 && do_bap) {
      st = qat_ckpt_get_int(&c, "blocks_done", &blocks_done);
      if (st == QAT_OK && (blocks_done < 1 || blocks_done > L))
        st = QAT_FAIL(QAT_EFORMAT, "%s: blocks_done = %lld for a %d-layer model", ck,
                      (long long)blocks_done, L);
      /* the finished blocks are loaded by Block-AP once its full-precision stream has passed
       * their masters (qat_block_ap_phase); all of them done: load them now */
      if (st == QAT_OK && blocks_done == L)
        st = load_frozen(J, (int)blocks_done, &c);
      if (st == QAT_OK)
        qat_log("resumed from %s (Block-AP, %lld of %d blocks done)", ck, (long long)blocks_done, L);
    } else if (st == QAT_OK && strcmp(phase, "e2e_qp") == 0 && do_e2e) {
      st = load_frozen(J, L, &c);
      e2e_resume = 1;
      blocks_done = L;
    } else if (st == QAT_OK) {
      st = QAT_FAIL(QAT_EFORMAT, "%s: a checkpoint of phase '%s' cannot resume method %s", ck,
                    phase, qat_cfg_method_name(cfg->method));
    }
    if (st == QAT_OK && qat_ckpt_get_int(&c, "config_hash", &hash) == QAT_OK &&
        (uint64_t)hash != qat_config_hash(cfg))
      qat_warn("resuming %s with a different config than the one it was saved with", ck);
    qat_ckpt_close(&c);
    QAT_TRY(agree(J, st)); /* every rank read the same checkpoint */
  }
  QAT_TRY(agree(J, open_run_dir(J)));
  if (do_bap && blocks_done < L) QAT_TRY(qat_block_ap_phase(J, (int)blocks_done, ck));
  if (do_e2e) {
    J->hp = (qat_train_hyper){.steps = cfg->e2e_qp.steps, .batch = cfg->e2e_qp.batch,
                              .accum = cfg->e2e_qp.grad_accum, .lr = 0,
                              .lr_quant = cfg->e2e_qp.lr,
                              .warmup = llround(cfg->e2e_qp.warmup_ratio * cfg->e2e_qp.steps),
                              .clip = cfg->e2e_qp.clip};
    if (cfg->e2e_qp.packed) { /* the codes packed before prepare freezes anything (qgemm,
                               * qgemm_ds; no U8 codes arena beside the compute weights) */
      QAT_TRY(qat_context(qat_llama_pack_frozen(J->m), "e2e_qp.packed"));
      qat_llama_mem mm;
      QAT_TRY(qat_llama_memory(J->m, &mm));
      qat_log("e2e_qp: frozen codes packed: %.3f MB of codes and zero points", mm.codes / 1e6);
    }
    QAT_TRY(qat_e2e_qp_prepare(J->m, &J->e2e_params, &J->e2e_nparams));
    J->codes_frozen = 1;
    qat_optim_group groups[3] = {
        [QAT_PG_WEIGHT] = {0, 0, 0},
        [QAT_PG_QUANT] = {cfg->e2e_qp.lr, 0.0, 1},
        [QAT_PG_OTHER] = {0, 0, 0},
    };
    QAT_TRY(setup_loop(J, J->e2e_params, J->e2e_nparams, groups));
    if (e2e_resume) {
      QAT_TRY(load_ckpt(J, ck));
      qat_log("resumed from %s (E2E-QP step %lld)", ck, (long long)J->step);
    }
    qat_log("e2e_qp: %lld steps of %d x %d windows of %d tokens, lr %g, warmup %lld, clip %g; "
            "training %d step-size tensors%s",
            (long long)J->hp.steps, J->hp.batch, J->hp.accum, loop_seq_len(J), J->hp.lr_quant,
            (long long)J->hp.warmup, J->hp.clip, J->e2e_nparams,
            cfg->distill.enabled ? " (distillation)" : "");
    QAT_TRY(train_loop(J));
  }
  return final_table(J);
}

/* ---- GPTQ (gptq_phase.c): fp and RTN rows, GPTQ (or its checkpoint), the final table */
static qat_status gptq_method(job *J) {
  QAT_TRY(eqat_ref_rows(J));
  char ck[4096];
  int64_t ckstep = -1;
  QAT_TRY(find_ckpt(J, ck, sizeof ck, &ckstep));
  QAT_TRY(open_run_dir(J));
  QAT_TRY(qat_gptq_phase(J, ckstep >= 0 ? ck : NULL));
  return final_table(J);
}

/* The communicator, then setup on every rank, agreed: a rank that fails (a missing file on its
 * node, too little memory) stops all of them at start, each with one line. */
static qat_status open_dist(job *J) {
  const qat_config *cfg = J->cfg;
  QAT_TRY(qat_dist_open((qat_dist_kind)cfg->dist.backend,
                        cfg->device == QAT_DEV_CUDA ? QAT_DEV_CUDA : QAT_DEV_CPU,
                        cfg->dist.timeout_s, &J->dist));
  if (J->dist->rank != 0) qat_log_set_level(QAT_LOG_QUIET); /* rank 0 prints progress */
  /* the hash first: a collective every rank reaches, so the checks after it see one config */
  qat_status st = qat_dist_check_same(J->dist, qat_config_hash(cfg), "effective config");
  if (st == QAT_OK) st = qat_dist_train_check(J->dist, cfg);
  if (st == QAT_OK && J->dist->world > 1)
    qat_log("data parallel: %d ranks (%s)", J->dist->world, J->dist->name);
  return st;
}

qat_status qat_train_run(const qat_config *cfg) {
  job J = {.cfg = cfg};
  qat_status st = open_dist(&J);
  J.agreed = st != QAT_OK; /* open_dist's checks fail on every rank alike */
  if (st == QAT_OK) st = agree(&J, setup(&J));
  if (st == QAT_OK) {
    qat_log("model %s: %d layers, dim %d, vocab %d; W%d g%d %s; %lld train / %lld val tokens; "
            "method %s",
            cfg->model, J.m->cfg.n_layers, J.m->cfg.dim, J.m->cfg.vocab, J.q.bits, J.q.group,
            J.q.sym ? "sym" : "asym", (long long)J.ntrain, (long long)J.nval,
            qat_cfg_method_name(cfg->method));
    if (cfg->method == QAT_METHOD_QAT) {
      st = agree(&J, start_run_dir(&J));
      if (st == QAT_OK) st = train_loop(&J);
      if (st == QAT_OK) st = final_table(&J);
    } else if (cfg->method == QAT_METHOD_GPTQ) {
      st = gptq_method(&J);
    } else {
      st = eqat_run(&J);
    }
  }
  if (J.metrics) fclose(J.metrics);
  qat_optim_free(&J.opt);
  qat_zero_free(&J.zero);
  if (J.m) qat_llama_free(J.m);
  if (J.teacher) qat_llama_free(J.teacher);
  free(J.train);
  free(J.val);
  free(J.tok);
  free(J.tgt);
  free(J.kd_host);
  qat_arena_free(&J.kd_arena);
  free(J.e2e_params);
  /* a rank that failed alone (not through an agreement or an agreed stop) leaves without
   * finalizing; its exit status makes the launcher end the others */
  if (J.dist) qat_dist_close(J.dist, st == QAT_OK || st == QAT_EINTERRUPT || J.agreed);
  return st;
}

/* method: gptq in the trainer (eqat.h): GPTQ (train/gptq_run.h) of the student on calibration
 * windows of data.seq_len drawn from data.train with train.seed, then the layers frozen to their
 * integer codes and one checkpoint (phase "gptq", the EfficientQAT layer tensors: weights,
 * scales, zeros, codes, norm gains), so `qat export` and the final table work as for the other
 * methods. A run directory that already holds that checkpoint is loaded instead of recomputed. */
#include "train/eqat.h"
#include "train/gptq_run.h"

#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qat_status save(qat_train_job *J, const qat_gptq_run_stats *gs) {
  const qat_config *cfg = J->cfg;
  qat_ckpt_writer w;
  qat_ckpt_writer_init(&w);
  qat_eqat_bufs bufs = {0};
  qat_status st = qat_eqat_ckpt_add_layers(J->m, 0, J->m->cfg.n_layers, 1, &w, &bufs);
  if (st == QAT_OK) st = qat_ckpt_set_str(&w, "phase", "gptq");
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "config_hash", (int64_t)qat_config_hash(cfg));
  if (st == QAT_OK) st = qat_ckpt_set_str(&w, "method", qat_cfg_method_name(cfg->method));
  if (st == QAT_OK) st = qat_ckpt_set_float(&w, "rel_err_rtn", gs->rel_err_rtn);
  if (st == QAT_OK) st = qat_ckpt_set_float(&w, "rel_err_gptq", gs->rel_err_gptq);
  char path[4096];
  if (st == QAT_OK)
    st = qat_ckpt_save(cfg->checkpoint.dir, 0, &w, cfg->checkpoint.keep, path, sizeof path);
  if (st == QAT_OK) qat_log("checkpoint: %s", path);
  qat_eqat_bufs_free(&bufs);
  qat_ckpt_writer_free(&w);
  return st;
}

qat_status qat_gptq_phase(qat_train_job *J, const char *ck) {
  const qat_config *cfg = J->cfg;
  const int L = J->m->cfg.n_layers;
  if (ck) { /* done before: the checkpoint holds the result */
    qat_ckpt c;
    QAT_TRY(qat_ckpt_open(ck, &c));
    const char *phase = "";
    qat_status st = qat_ckpt_get_str(&c, "phase", &phase);
    if (st == QAT_OK && strcmp(phase, "gptq") != 0)
      st = QAT_FAIL(QAT_EFORMAT, "%s: a checkpoint of phase '%s' cannot resume method gptq", ck,
                    phase);
    if (st == QAT_OK) st = qat_eqat_ckpt_load_layers(J->m, 0, L, &c);
    qat_ckpt_close(&c);
    QAT_TRY(st);
    qat_log("resumed from %s (GPTQ done)", ck);
    return QAT_OK;
  }
  const int T = cfg->data.seq_len;
  const int64_t ns = cfg->gptq.samples;
  int32_t *calib = malloc((size_t)(ns * T) * 4);
  if (!calib) return QAT_FAIL(QAT_ENOMEM, "gptq: out of host memory");
  qat_status st = qat_windows_gather((uint64_t)cfg->train.seed, J->train, J->ntrain, T, ns, calib);
  /* data parallelism: window i to rank i mod W (each rank caches its own windows) */
  int W = J->dist->world, R = J->dist->rank;
  int64_t ns_r = 0;
  if (st == QAT_OK && ns < W) {
    st = QAT_FAIL(QAT_EUSAGE, "gptq.samples = %lld: fewer than the %d ranks", (long long)ns, W);
    J->agreed = 1;
  }
  for (int64_t i = R; st == QAT_OK && i < ns; i += W, ns_r++)
    memmove(calib + ns_r * T, calib + i * T, (size_t)T * 4);
  qat_gptq_run_opts o = {
      .T = T, .batch = cfg->gptq.batch,
      .gptq = {.damp = cfg->gptq.damp, .block = cfg->gptq.block, .act_order = cfg->gptq.act_order},
      .true_sequential = cfg->gptq.true_sequential, .skip_first = cfg->gptq.skip_first,
      .first_weight = (float)cfg->gptq.first_weight,
      .budget = {.device_bytes = (size_t)cfg->block_ap.cache_device_mb << 20,
                 .host_bytes = (size_t)cfg->block_ap.cache_host_mb << 20,
                 .disk_dir = cfg->block_ap.cache_dir},
      .cache_dtype = cfg->block_ap.cache_dtype, .dist = J->dist, .samples_total = ns};
  qat_gptq_run_stats gs = {0};
  if (st == QAT_OK) {
    qat_log("gptq: %lld windows of %d tokens from %s, damp %g, block %d%s%s", (long long)ns, T,
            cfg->data.train, o.gptq.damp, o.gptq.block, o.gptq.act_order ? ", act-order" : "",
            o.true_sequential ? ", true-sequential" : "");
    if (W > 1)
      qat_log("gptq: %d ranks, %lld windows in this rank's activation cache; the Hessians "
              "are summed across ranks", W, (long long)ns_r);
    st = qat_gptq_run(J->m, calib, ns_r, &o, &gs);
  }
  free(calib);
  QAT_TRY(st);
  qat_log("gptq: rel. output error on the calibration data (mean of %lld Linears) RTN %.5g -> "
          "GPTQ %.5g, %lld dead input columns, %.1f s",
          (long long)gs.linears, gs.rel_err_rtn, gs.rel_err_gptq, (long long)gs.dead, gs.seconds);
  if (J->metrics) {
    fprintf(J->metrics, "{\"gptq\": {\"rel_err_rtn\": %.6g, \"rel_err_gptq\": %.6g, "
                        "\"linears\": %lld, \"seconds\": %.3f}}\n",
            gs.rel_err_rtn, gs.rel_err_gptq, (long long)gs.linears, gs.seconds);
    fflush(J->metrics);
  }
  QAT_TRY(qat_llama_freeze_codes(J->m, -1)); /* the result is integer codes */
  /* every rank holds the same codes: rank 0 writes them, and a failed save stops all */
  st = qat_dist_agree(J->dist, J->dist->rank == 0 ? save(J, &gs) : QAT_OK);
  if (st != QAT_OK) J->agreed = 1;
  return st;
}

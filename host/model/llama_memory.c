/* The model's memory: what its arenas hold (qat_llama_memory) and what a job would hold before
 * anything is allocated (qat_llama_memory_estimate), from the same sizing passes the builders in
 * llama.c run, so estimate and allocation cannot disagree (tests/test_model_mem.c). */
#include "model/llama_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void mem_total(qat_llama_mem *o) {
  o->total = o->params + o->grads + o->qstate + o->qgrads + o->wcomp + o->acts + o->bacts + o->codes;
}

qat_status qat_llama_memory(const qat_llama *m, qat_llama_mem *out) {
  const struct qat_llama_priv *P = m->priv;
  memset(out, 0, sizeof *out);
  out->params = P->params.cap;
  out->grads = P->grads.cap;
  out->qstate = P->qstate.cap;
  out->qgrads = P->qgrads.cap;
  out->wcomp = P->wcomp.cap;
  out->acts = P->acts.cap;
  out->bacts = P->bacts.cap;
  out->codes = P->codes.cap + P->ecodes_bytes;
  mem_total(out);
  return QAT_OK;
}

/* The estimate runs the sizing passes of the real builders on a shell model (layers, shapes and
 * the layout state, no arena), so the two cannot disagree. */
qat_status qat_llama_memory_estimate(const qat_llama_config *cfg, const qat_llama_mem_job *job,
                                     qat_llama_mem *out) {
  memset(out, 0, sizeof *out);
  if (job->act_dtype != QAT_F32 && job->act_dtype != QAT_BF16)
    return QAT_FAIL(QAT_EINVAL, "memory estimate: act_dtype must be F32 or BF16");
  if (job->B < 0 || job->T < 0 || job->block_B < 0 || job->block_T < 0)
    return QAT_FAIL(QAT_EINVAL, "memory estimate: negative batch or sequence length");
  if (job->qspec) QAT_TRY(qat_qspec_check(job->qspec));
  qat_llama *m = NULL;
  QAT_TRY(qat_llama_shell(cfg, &m));
  struct qat_llama_priv *P = m->priv;
  m->act_dtype = job->act_dtype;
  m->train_embeddings = job->train_embeddings != 0;
  m->quantized = job->qspec != NULL;
  if (job->qspec) m->qspec = *job->qspec;
  int plan = job->B > 0 && job->T > 0, bplan = job->block_B > 0 && job->block_T > 0;
  P->training = plan && job->training;
  P->btraining = bplan && job->block_training;
  P->recompute = P->training && job->recompute;
  int codes = m->quantized && job->frozen_codes;
  lt_entry *t = NULL;
  int n = 0;
  qat_status st;
  QAT_CHECK(st, qat_llama_params_need(m, job->drop_masters && !m->quantized &&
                                     job->act_dtype != QAT_F32 && !P->training && !P->btraining,
                                 &out->params),
            done);
  if (m->quantized) out->qstate = qat_llama_qstate_need(m, &m->qspec);
  P->est_packed = codes && job->packed_codes;
  out->wcomp = qat_llama_wcomp_need(m);
  if (codes) out->codes = P->est_packed ? qat_llama_pk_need(m) : qat_llama_codes_need(m);
  if (P->training || P->btraining) {
    int one = !P->training;
    for (int l = 0; l < cfg->n_layers; l++) P->grads_codes[l] = !one && codes;
    QAT_CHECK(st, qat_llama_table(m, &t, &n), done);
    QAT_CHECK(st, qat_llama_grads_walk(m, t, n, one, P->grads_codes, 0, &out->grads, &out->qgrads), done);
  }
  if (plan) {
    P->nact = P->training ? cfg->n_layers : 1;
    P->act = calloc((size_t)P->nact, sizeof *P->act);
    if (!P->act) {
      st = QAT_FAIL(QAT_ENOMEM, "memory estimate: out of host memory");
      goto done;
    }
    QAT_CHECK(st, qat_llama_acts_walk(m, (int64_t)job->B * job->T, 0, &out->acts), done);
  }
  if (bplan) {
    llama_buf_spec list[32];
    int k = qat_llama_block_specs(m, (int64_t)job->block_B * job->block_T, P->btraining, list);
    QAT_CHECK(st, qat_llama_carve(&P->bacts, list, k, 0, &out->bacts), done);
  }
  mem_total(out);
done:
  free(t);
  qat_llama_free(m);
  return st;
}

const char *qat_llama_memory_str(const qat_llama_mem *mm, char *buf, size_t n) {
  const double G = 1024.0 * 1024.0 * 1024.0;
  snprintf(buf, n,
           "params %.2f GiB, grads %.2f GiB, quantizer state %.2f GiB, quantizer grads %.2f GiB, "
           "compute weights %.2f GiB, activations %.2f GiB, block activations %.2f GiB, "
           "codes %.2f GiB; total %.2f GiB",
           mm->params / G, mm->grads / G, mm->qstate / G, mm->qgrads / G, mm->wcomp / G,
           mm->acts / G, mm->bacts / G, mm->codes / G, mm->total / G);
  return buf;
}

// SentencePiece tokenizer.model behind a C interface (tokenizer_internal.h). The only C++ in
// host/: it turns sentencepiece's util::Status and every C++ exception into qat_status values,
// so no exception ever crosses into C code.
#include <sentencepiece_processor.h>

#include <exception>
#include <new>
#include <string>
#include <vector>

#include "io/tokenizer_internal.h"

struct qat_spm {
  sentencepiece::SentencePieceProcessor sp;
};

extern "C" qat_status qat_spm_load(const char *path, const void *data, size_t size,
                                   qat_spm **out) {
  *out = nullptr;
  QAT_TRY(qat_spm_check_tables(path, data, size));
  qat_spm *s = nullptr;
  try {
    s = new qat_spm();
    auto st = s->sp.LoadFromSerializedProto(
        std::string_view(static_cast<const char *>(data), size));
    if (!st.ok()) {
      std::string msg = st.ToString();
      for (char &c : msg)
        if (c == '\n' || c == '\r') c = ' '; /* errors are one line */
      delete s;
      return QAT_FAIL(QAT_EFORMAT, "%s: not a valid SentencePiece model: %s", path, msg.c_str());
    }
    if (s->sp.GetPieceSize() <= 0) {
      delete s;
      return QAT_FAIL(QAT_EFORMAT, "%s: SentencePiece model has no pieces", path);
    }
  } catch (const std::bad_alloc &) {
    delete s;
    return QAT_FAIL(QAT_ENOMEM, "%s: loading SentencePiece model", path);
  } catch (const std::exception &e) {
    delete s;
    return QAT_FAIL(QAT_EFORMAT, "%s: SentencePiece: %s", path, e.what());
  } catch (...) {
    delete s;
    return QAT_FAIL(QAT_EINTERNAL, "%s: SentencePiece: unknown exception", path);
  }
  *out = s;
  return QAT_OK;
}

extern "C" void qat_spm_free(qat_spm *s) { delete s; }

extern "C" int qat_spm_vocab(const qat_spm *s) { return s->sp.GetPieceSize(); }
extern "C" int qat_spm_bos(const qat_spm *s) { return s->sp.bos_id(); }
extern "C" int qat_spm_eos(const qat_spm *s) { return s->sp.eos_id(); }

extern "C" qat_status qat_spm_encode(const qat_spm *s, const char *text, size_t len,
                                     qat_ivec *out) {
  try {
    std::vector<int> ids;
    auto st = s->sp.Encode(std::string_view(text, len), &ids);
    if (!st.ok()) return QAT_FAIL(QAT_EINVAL, "SentencePiece encode: %s", st.ToString().c_str());
    QAT_TRY(qat_ivec_reserve(out, (int64_t)ids.size()));
    for (int id : ids) out->v[out->n++] = id;
  } catch (const std::bad_alloc &) {
    return QAT_FAIL(QAT_ENOMEM, "SentencePiece encode of %zu bytes", len);
  } catch (const std::exception &e) {
    return QAT_FAIL(QAT_EINTERNAL, "SentencePiece encode: %s", e.what());
  } catch (...) {
    return QAT_FAIL(QAT_EINTERNAL, "SentencePiece encode: unknown exception");
  }
  return QAT_OK;
}

extern "C" const char *qat_spm_piece(const qat_spm *s, int id, size_t *len, int *kind) {
  try {
    if (id < 0 || id >= s->sp.GetPieceSize()) return nullptr;
    const std::string &p = s->sp.IdToPiece(id);
    *len = p.size();
    *kind = s->sp.IsControl(id) ? QAT_SPM_CONTROL
            : s->sp.IsByte(id)  ? QAT_SPM_BYTE
            : s->sp.IsUnknown(id) ? QAT_SPM_UNKNOWN
                                  : QAT_SPM_NORMAL;
    return p.c_str();
  } catch (...) {
    return nullptr;
  }
}

extern "C" float qat_spm_score(const qat_spm *s, int id) {
  try {
    return id >= 0 && id < s->sp.GetPieceSize() ? s->sp.GetScore(id) : 0.0f;
  } catch (...) {
    return 0.0f;
  }
}

extern "C" int qat_spm_type(const qat_spm *s, int id) {
  try {
    if (id < 0 || id >= s->sp.GetPieceSize()) return 0;
    return s->sp.IsUnknown(id) ? 2 : s->sp.IsControl(id) ? 3 : s->sp.IsUnused(id) ? 5
           : s->sp.IsByte(id) ? 6 : 1;
  } catch (...) {
    return 0;
  }
}

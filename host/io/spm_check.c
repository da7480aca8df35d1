/* Checks a SentencePiece model's normalization tables before the sentencepiece library sees
 * them. The library validates the protobuf but not the "precompiled_charsmap" blobs
 * (NormalizerSpec field 2, in ModelProto.normalizer_spec = 3 and denormalizer_spec = 5): a
 * Darts double-array trie followed by NUL-terminated replacement strings, read without bounds
 * checks while encoding (found by tests/fuzz/fuzz_tokenizer_spm: a SEGV in
 * Normalizer::NormalizePrefix on a mutated model). Here every trie state the encoder can reach
 * is walked once with the library's own transition rule (darts-clone commonPrefixSearch), so a
 * blob that passes can be read only within itself.
 *
 * Blob layout (sentencepiece normalizer.cc): u32 LE trie_bytes T, T bytes of trie (32-bit
 * units), then the strings; a unit u has label u & (2^31 | 0xFF), leaf flag bit 8, offset
 * (u >> 10) << ((u & 2^9) >> 6), and a value unit holds (value | 2^31). */
#include "io/tokenizer_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct pb {
  const uint8_t *p, *end;
} pb;

static int pb_varint(pb *r, uint64_t *v) {
  *v = 0;
  for (int s = 0; s < 64; s += 7) {
    if (r->p >= r->end) return -1;
    uint8_t b = *r->p++;
    *v |= (uint64_t)(b & 0x7f) << s;
    if (!(b & 0x80)) return 0;
  }
  return -1;
}

/* Next field of a message: its number, wire type and (wire type 2) bytes; other wire types
 * are skipped over, a group (3) whole, to its end tag (4). 1 = a field, 0 = end, -1 =
 * malformed (or groups nested deeper than 32). */
static int pb_next(pb *r, uint32_t *field, int *wt, pb *bytes, int depth) {
  if (r->p >= r->end) return 0;
  uint64_t key, v;
  if (pb_varint(r, &key) || key >> 32) return -1;
  *field = (uint32_t)(key >> 3);
  *wt = (int)(key & 7);
  switch (*wt) {
  case 0: return pb_varint(r, &v) ? -1 : 1;
  case 1:
  case 5: {
    size_t n = *wt == 1 ? 8 : 4;
    if ((size_t)(r->end - r->p) < n) return -1;
    r->p += n;
    return 1;
  }
  case 2:
    if (pb_varint(r, &v) || v > (uint64_t)(r->end - r->p)) return -1;
    bytes->p = r->p;
    bytes->end = r->p + v;
    r->p += v;
    return 1;
  case 3:
    if (depth >= 32) return -1;
    for (;;) {
      uint32_t f;
      int w;
      pb b;
      if (pb_next(r, &f, &w, &b, depth + 1) <= 0) return -1;
      if (w == 4) return 1;
    }
  case 4: return 1;
  default: return -1;
  }
}

static uint32_t unit_at(const uint8_t *trie, uint32_t i) {
  const uint8_t *b = trie + 4 * (size_t)i;
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

static qat_status check_charsmap(const char *path, const char *which, const uint8_t *blob,
                                 size_t len) {
  if (len == 0) return QAT_OK; /* no table: identity normalization */
  if (len <= 4)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s precompiled_charsmap is %zu bytes (truncated)", path,
                    which, len);
  uint32_t tb = (uint32_t)blob[0] | (uint32_t)blob[1] << 8 | (uint32_t)blob[2] << 16 |
                (uint32_t)blob[3] << 24;
  if ((uint64_t)tb >= len - 4)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s precompiled_charsmap: trie of %u bytes in a %zu-byte blob",
                    path, which, tb, len);
  const uint8_t *trie = blob + 4, *strs = blob + 4 + tb;
  size_t nstr = len - 4 - tb;
  uint32_t n = tb / 4; /* units */
  if (strs[nstr - 1] != 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s precompiled_charsmap: strings not NUL-terminated", path,
                    which);
  if (n == 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s precompiled_charsmap: empty trie", path, which);
  /* states = positions after "node_pos ^= offset"; from state b byte c reads unit b ^ c */
  uint8_t *seen = calloc((size_t)n / 8 + 1, 1);
  uint32_t *stack = malloc(((size_t)n + 2) * sizeof *stack); /* each state pushed once */
  qat_status st = QAT_OK;
  if (!seen || !stack) {
    st = QAT_FAIL(QAT_ENOMEM, "%s: checking the %s charsmap", path, which);
    goto done;
  }
  size_t top = 0;
  uint32_t root = unit_offset(unit_at(trie, 0));
  stack[top++] = root;
  while (top > 0 && st == QAT_OK) {
    uint32_t b = stack[--top];
    if ((b | 0xFFu) >= n) {
      st = QAT_FAIL(QAT_EFORMAT, "%s: %s precompiled_charsmap: trie state %u outside its %u units",
                    path, which, b, n);
      break;
    }
    for (uint32_t c = 0; c < 256 && st == QAT_OK; c++) {
      uint32_t u = unit_at(trie, b ^ c);
      if ((u & ((1u << 31) | 0xFFu)) != c) continue; /* no transition on c */
      uint32_t nb = (b ^ c) ^ unit_offset(u);
      if ((u >> 8) & 1) { /* a leaf: its value unit is read as an offset into the strings */
        if (nb >= n) {
          st = QAT_FAIL(QAT_EFORMAT, "%s: %s precompiled_charsmap: value unit %u outside the trie",
                        path, which, nb);
          break;
        }
        uint32_t v = unit_at(trie, nb) & 0x7fffffffu;
        if (v >= nstr) {
          st = QAT_FAIL(QAT_EFORMAT,
                        "%s: %s precompiled_charsmap: replacement at %u past the %zu-byte strings",
                        path, which, v, nstr);
          break;
        }
      }
      if (nb < n && (seen[nb / 8] >> (nb % 8) & 1)) continue;
      if (nb < n) seen[nb / 8] |= (uint8_t)(1u << (nb % 8));
      stack[top++] = nb; /* nb >= n fails when popped (and stops the walk) */
    }
  }
done:
  free(seen);
  free(stack);
  return st;
}

/* Every NormalizerSpec occurrence (protobuf merges repeated ones, so all are checked). */
static qat_status check_spec(const char *path, const char *which, pb spec) {
  uint32_t f;
  int wt, k;
  pb b;
  while ((k = pb_next(&spec, &f, &wt, &b, 0)) == 1)
    if (f == 2 && wt == 2) QAT_TRY(check_charsmap(path, which, b.p, (size_t)(b.end - b.p)));
  if (k < 0) return QAT_FAIL(QAT_EFORMAT, "%s: malformed %s (protobuf)", path, which);
  return QAT_OK;
}

qat_status qat_spm_check_tables(const char *path, const void *data, size_t size) {
  pb r = {data, (const uint8_t *)data + size};
  uint32_t f;
  int wt, k;
  pb b;
  while ((k = pb_next(&r, &f, &wt, &b, 0)) == 1) {
    if (wt != 2) continue;
    if (f == 3) QAT_TRY(check_spec(path, "normalizer_spec", b));
    if (f == 5) QAT_TRY(check_spec(path, "denormalizer_spec", b));
  }
  if (k < 0) return QAT_FAIL(QAT_EFORMAT, "%s: not a valid SentencePiece model (protobuf)", path);
  return QAT_OK;
}

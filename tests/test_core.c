/* Core: status messages, dtype conversions (against exact known encodings), arenas. */
#include "testutil.h"

#include <math.h>
#include <string.h>

START_TEST(test_status_message) {
  qat_status st = QAT_FAIL(QAT_EFORMAT, "bad header in %s", "x.safetensors");
  ck_assert_int_eq(st, QAT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "bad header in x.safetensors"));
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "test_core.c:"));
  qat_context(st, "model");
  ck_assert_int_eq(strncmp(qat_last_error(), "model: bad header", 17), 0);
  ck_assert_int_eq(qat_exit_code(QAT_EUSAGE), 2);
  ck_assert_int_eq(qat_exit_code(QAT_EFORMAT), 1);
}
END_TEST

/* Names from files may hold control bytes (the fuzzers found a shard name and an npy header key
 * with a newline): a message stays one line, each such byte shown as '?'. */
START_TEST(test_status_one_line) {
  QAT_FAIL(QAT_EFORMAT, "shard \"a\nb\r\tc\x7f\" missing");
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "shard \"a?b??c?\" missing"));
  qat_context(QAT_EFORMAT, "x.json\n");
  ck_assert_int_eq(strncmp(qat_last_error(), "x.json?: shard", 14), 0);
  ck_assert_ptr_null(strpbrk(qat_last_error(), "\n\r\t"));
}
END_TEST

START_TEST(test_half_known_values) {
  /* exact encodings */
  ck_assert_uint_eq(qat_f32_to_f16(1.0f), 0x3c00);
  ck_assert_uint_eq(qat_f32_to_f16(-2.0f), 0xc000);
  ck_assert_uint_eq(qat_f32_to_f16(65504.0f), 0x7bff);
  ck_assert_uint_eq(qat_f32_to_f16(1e6f), 0x7c00);
  ck_assert_uint_eq(qat_f32_to_f16(5.960464477539063e-08f), 0x0001); /* smallest subnormal */
  ck_assert_uint_eq(qat_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);     /* tie -> even */
  ck_assert_uint_eq(qat_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);     /* tie -> even (up) */
  ck_assert(isnan(qat_f16_to_f32(qat_f32_to_f16(NAN))));
  /* every half round-trips */
  for (uint32_t h = 0; h < 0x10000; h++) {
    float f = qat_f16_to_f32((uint16_t)h);
    if (isnan(f)) continue;
    ck_assert_uint_eq(qat_f32_to_f16(f), h);
  }
}
END_TEST

START_TEST(test_bf16_known_values) {
  ck_assert_uint_eq(qat_f32_to_bf16(1.0f), 0x3f80);
  ck_assert_uint_eq(qat_f32_to_bf16(-3.5f), 0xc060);
  /* 1 + 2^-8 is a tie between 1 and 1 + 2^-7: rounds to even (1.0) */
  ck_assert_uint_eq(qat_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
  ck_assert_uint_eq(qat_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
  ck_assert(isnan(qat_bf16_to_f32(qat_f32_to_bf16(NAN))));
  for (uint32_t b = 0; b < 0x10000; b++) {
    float f = qat_bf16_to_f32((uint16_t)b);
    if (isnan(f)) continue;
    ck_assert_uint_eq(qat_f32_to_bf16(f), b);
  }
}
END_TEST

START_TEST(test_arena) {
  qat_arena a;
  TU_REQUIRE_OK(qat_arena_init(&a, qat_backend_cpu(), "params", 4096));
  qat_tensor t;
  TU_REQUIRE_OK(qat_arena_tensor(&a, &t, QAT_F32, 2, (int64_t[]){3, 5}, "w"));
  ck_assert_int_eq(qat_numel(&t), 15);
  ck_assert_int_eq(((uintptr_t)t.data) % 256, 0);
  ck_assert_float_eq(((float *)t.data)[14], 0.0f);
  qat_tensor big;
  qat_status st = qat_arena_tensor(&a, &big, QAT_F32, 1, (int64_t[]){2000}, "big");
  ck_assert_int_eq(st, QAT_ENOMEM);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "params"));
  qat_arena_free(&a);
}
END_TEST

START_TEST(test_dtype_parse) {
  qat_dtype d;
  TU_REQUIRE_OK(qat_dtype_parse("BF16", &d));
  ck_assert_int_eq(d, QAT_BF16);
  ck_assert_int_eq(qat_dtype_parse("F8_E4M3", &d), QAT_EUNSUPPORTED);
}
END_TEST

int main(void) {
  Suite *s = suite_create("core");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_status_message);
  tcase_add_test(tc, test_status_one_line);
  tcase_add_test(tc, test_half_known_values);
  tcase_add_test(tc, test_bf16_known_values);
  tcase_add_test(tc, test_arena);
  tcase_add_test(tc, test_dtype_parse);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}

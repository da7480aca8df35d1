/* host/dist without a launcher: rank discovery from each launcher's variables (REFERENCE.md
 * section 8) and their errors, the single-process communicator, the backend choice and its
 * refusals, and the TCP unique-id broadcast between forked processes. The MPI communicator's
 * collectives are checked under mpirun by tests/test_dist_comm.sh (bench_allreduce --check). */
#include "core/log.h"
#include "dist/dist.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *k_vars[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                               "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
                               "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                               "SLURM_NTASKS_PER_NODE", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                               "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"};

static void clear_env(void) {
  for (size_t i = 0; i < sizeof k_vars / sizeof *k_vars; i++) unsetenv(k_vars[i]);
}

START_TEST(test_env_families) {
  clear_env();
  qat_dist_env e;
  TU_REQUIRE_OK(qat_dist_env_detect(&e));
  ck_assert_int_eq(e.world, 1);
  ck_assert_int_eq(e.rank, 0);
  ck_assert_str_eq(e.launcher, "none");
  /* torchrun */
  setenv("RANK", "3", 1);
  setenv("WORLD_SIZE", "8", 1);
  setenv("LOCAL_RANK", "1", 1);
  TU_REQUIRE_OK(qat_dist_env_detect(&e));
  ck_assert_str_eq(e.launcher, "torchrun");
  ck_assert_int_eq(e.rank, 3);
  ck_assert_int_eq(e.world, 8);
  ck_assert_int_eq(e.local_rank, 1);
  /* Slurm wins over torchrun, Open MPI over both (mpirun inside an allocation) */
  setenv("SLURM_PROCID", "5", 1);
  setenv("SLURM_NTASKS", "16", 1);
  setenv("SLURM_LOCALID", "2", 1);
  TU_REQUIRE_OK(qat_dist_env_detect(&e));
  ck_assert_str_eq(e.launcher, "slurm");
  ck_assert_int_eq(e.rank, 5);
  ck_assert_int_eq(e.world, 16);
  ck_assert_int_eq(e.local_rank, 2);
  setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "1", 1);
  TU_REQUIRE_OK(qat_dist_env_detect(&e));
  ck_assert_str_eq(e.launcher, "mpirun");
  ck_assert_int_eq(e.rank, 1);
  ck_assert_int_eq(e.world, 2);
  ck_assert_int_eq(e.local_rank, 0);
  ck_assert_int_eq(e.local_world, 1);
  clear_env();
}
END_TEST

START_TEST(test_env_errors) {
  clear_env();
  qat_dist_env e;
  setenv("RANK", "2", 1);
  setenv("WORLD_SIZE", "2", 1);
  ck_assert_int_eq(qat_dist_env_detect(&e), QAT_EUSAGE); /* rank >= world */
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "RANK = 2"));
  setenv("WORLD_SIZE", "two", 1);
  ck_assert_int_eq(qat_dist_env_detect(&e), QAT_EUSAGE);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "WORLD_SIZE"));
  setenv("WORLD_SIZE", "0", 1);
  setenv("RANK", "0", 1);
  ck_assert_int_eq(qat_dist_env_detect(&e), QAT_EUSAGE);
  /* only one of the pair set: not that launcher */
  unsetenv("WORLD_SIZE");
  TU_REQUIRE_OK(qat_dist_env_detect(&e));
  ck_assert_int_eq(e.world, 1);
  clear_env();
}
END_TEST

START_TEST(test_single) {
  clear_env();
  qat_dist *d = NULL;
  TU_REQUIRE_OK(qat_dist_open(QAT_DIST_AUTO, QAT_DEV_CPU, 600, &d));
  ck_assert_str_eq(d->name, "single");
  ck_assert_int_eq(d->world, 1);
  float x[5] = {1, 2, 3, 4, 5}, y[5] = {0};
  TU_REQUIRE_OK(d->allreduce(d, x, 5, QAT_F32, QAT_RED_AVG));
  ck_assert(x[0] == 1 && x[4] == 5);
  TU_REQUIRE_OK(d->allgather(d, x, y, sizeof x));
  ck_assert(y[2] == 3);
  TU_REQUIRE_OK(d->reduce_scatter(d, x, y, 5, QAT_F32, QAT_RED_SUM));
  ck_assert(y[4] == 5);
  ck_assert_int_eq(d->allreduce(d, x, 5, QAT_I32, QAT_RED_SUM), QAT_EINVAL);
  ck_assert_int_eq(d->broadcast(d, x, 4, 1), QAT_EINVAL);
  TU_REQUIRE_OK(qat_dist_check_same(d, 42, "config hash"));
  /* agree passes a rank's own status through unchanged in one process */
  ck_assert_int_eq(qat_dist_agree(d, QAT_OK), QAT_OK);
  ck_assert_int_eq(qat_dist_agree(d, QAT_FAIL(QAT_EIO, "disk full")), QAT_EIO);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "disk full"));
  TU_REQUIRE_OK(qat_dist_open(QAT_DIST_SINGLE, QAT_DEV_CPU, 0, &d));
  qat_dist_close(d, 1);
}
END_TEST

START_TEST(test_open_refusals) {
  clear_env();
  qat_dist *d = NULL;
  qat_dist_kind k;
  ck_assert_int_eq(qat_dist_kind_parse("gloo", &k), QAT_EUSAGE);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "gloo"));
  TU_REQUIRE_OK(qat_dist_kind_parse("nccl", &k));
  ck_assert_int_eq(k, QAT_DIST_NCCL);
  ck_assert_int_eq(qat_dist_open(QAT_DIST_AUTO, QAT_DEV_CPU, -1, &d), QAT_EUSAGE);
  /* nccl reduces device buffers: never on the CPU backend (or not built at all) */
  ck_assert_int_eq(qat_dist_open(QAT_DIST_NCCL, QAT_DEV_CPU, 600, &d), QAT_EUNSUPPORTED);
  ck_assert_ptr_null(d);
  /* a launcher started several ranks: single refuses; mpi without mpirun / srun refuses */
  setenv("RANK", "0", 1);
  setenv("WORLD_SIZE", "2", 1);
  ck_assert_int_eq(qat_dist_open(QAT_DIST_SINGLE, QAT_DEV_CPU, 600, &d), QAT_EUSAGE);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "2 ranks"));
  qat_status st = qat_dist_open(QAT_DIST_MPI, QAT_DEV_CPU, 600, &d);
  ck_assert_int_eq(st, qat_dist_have(QAT_DIST_MPI) ? QAT_EUSAGE : QAT_EUNSUPPORTED);
  if (qat_dist_have(QAT_DIST_MPI))
    ck_assert_int_eq(qat_dist_open(QAT_DIST_MPI, QAT_DEV_CUDA, 600, &d), QAT_EUNSUPPORTED);
  clear_env();
}
END_TEST

/* Rank 0 (this process) serves 32 bytes to 3 forked peers, each of which exits 0 only when it
 * received exactly those bytes. */
START_TEST(test_tcp_bcast) {
  clear_env();
  char port[16];
  snprintf(port, sizeof port, "%d", 20000 + (int)(getpid() % 20000));
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", port, 1);
  unsigned char id[32];
  for (int i = 0; i < 32; i++) id[i] = (unsigned char)(i * 7 + 3);
  pid_t kids[3];
  for (int r = 1; r <= 3; r++) {
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
      qat_dist_env e = {.rank = r, .world = 4, .launcher = "torchrun"};
      unsigned char got[32] = {0};
      qat_status st = qat_dist_tcp_bcast(&e, got, sizeof got, 20);
      _exit(st == QAT_OK && memcmp(got, id, sizeof id) == 0 ? 0 : 1);
    }
    kids[r - 1] = p;
  }
  qat_dist_env e0 = {.rank = 0, .world = 4, .launcher = "torchrun"};
  TU_REQUIRE_OK(qat_dist_tcp_bcast(&e0, id, sizeof id, 20));
  for (int i = 0; i < 3; i++) {
    int ws = 0;
    waitpid(kids[i], &ws, 0);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "peer %d did not get the id", i + 1);
  }
  /* a peer with nobody listening gives up after its timeout with an error naming the address */
  qat_dist_env e1 = {.rank = 1, .world = 2, .launcher = "torchrun"};
  unsigned char got[32];
  double t0 = qat_now();
  ck_assert_int_eq(qat_dist_tcp_bcast(&e1, got, sizeof got, 1), QAT_EIO);
  ck_assert(qat_now() - t0 < 10);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "127.0.0.1"));
  unsetenv("MASTER_ADDR");
  ck_assert_int_eq(qat_dist_tcp_bcast(&e1, got, sizeof got, 1), QAT_EUSAGE);
  clear_env();
}
END_TEST

int main(void) {
  Suite *s = suite_create("dist");
  TCase *tc = tcase_create("dist");
  tcase_add_test(tc, test_env_families);
  tcase_add_test(tc, test_env_errors);
  tcase_add_test(tc, test_single);
  tcase_add_test(tc, test_open_refusals);
  tcase_add_test(tc, test_tcp_bcast);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}

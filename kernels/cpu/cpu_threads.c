/* How this process's OpenMP threads wait: passively unless the user chose.
 *
 * Threads that wait by spinning (libgomp's default when OMP_WAIT_POLICY is
 * unset: GOMP_SPINCOUNT = 300,000 spins, milliseconds, at every barrier
 * and between parallel regions) burn the cores that a descheduled sibling
 * and the machine's other processes need. On a shared 2-core machine, the
 * demo training ran 10-70x slower than with passive waiting, and slower than
 * one thread; decode and the bench preset's training likewise
 * (bench/busy_machine.py). Passive waiting costs a wake per parallel
 * region on idle cores (10-45 µs: a futex, and on a VM the idle vCPU's
 * exit), so an op opens a region only for work worth more than that
 * (mxl_cpu_threads_for: a decode token of the bench preset opens one).
 *
 * libgomp reads its environment once, in its initializer, which runs
 * before main and resets with libc's own environment: neither a backend
 * nor an ELF pre-initializer can change the policy. The one way is the
 * environment of a fresh image of the program, hence the re-execution. */
#include <stdlib.h>
#include <unistd.h>

#include "mxlora.h"

/* The variables with which a user chooses how OpenMP threads wait (GNU and
 * LLVM runtimes). */
static const char *const wait_vars[] = {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"};

int mxl_wait_policy_chosen(void) {
  for (size_t i = 0; i < sizeof wait_vars / sizeof wait_vars[0]; i++)
    if (getenv(wait_vars[i])) return 1;
  return 0;
}

void mxl_wait_passively(char **argv) {
  if (mxl_wait_policy_chosen() || !argv || !argv[0]) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);
  /* Only on failure (no /proc): go on spinning, as before. */
}

/* The MPI launcher line of the data-parallel tests: the mpirun CMake found
 * (MXL_MPIEXEC), with --oversubscribe (more ranks than the CI machine's 2
 * cores) and, as root (CI), --allow-run-as-root. The ranks run without
 * AddressSanitizer's leak check: OpenMPI's components leak at MPI_Finalize
 * and are unloaded before the report, so no suppression can name them.
 * Single-process tests keep the leak check. */
#ifndef MXL_TESTS_MPI_LAUNCHER_H
#define MXL_TESTS_MPI_LAUNCHER_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef MXL_MPIEXEC
static inline void mpi_launcher(char *buf, size_t cap) {
  const char *asan = getenv("ASAN_OPTIONS");
  snprintf(buf, cap, "env ASAN_OPTIONS='%s%sdetect_leaks=0' %s --oversubscribe%s",
           asan ? asan : "", asan && *asan ? ":" : "", MXL_MPIEXEC,
           getuid() == 0 ? " --allow-run-as-root" : "");
}
#endif

#endif

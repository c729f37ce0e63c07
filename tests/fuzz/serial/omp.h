/* OpenMP as a single thread, for the fuzz builds (`make fuzz`): the library is compiled there
 * without -fopenmp, so its parallel regions run serially and deterministically, and clang
 * needs no OpenMP runtime. Found before the system's omp.h through -Itests/fuzz/serial. */
#ifndef BF_FUZZ_SERIAL_OMP_H
#define BF_FUZZ_SERIAL_OMP_H

static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline void omp_set_num_threads(int n) { (void)n; }
static inline int omp_get_num_procs(void) { return 1; }

#endif

// Per-thread scratch memory for an OpenMP worksharing loop.
#pragma once

namespace vmddpm::cpu {

// Opens an OpenMP team (of one thread unless `use_threads`) in which every thread makes its own
// `Scratch` with `allocate(scratch) -> bool`, then runs `work(scratch)`, which holds the
// `#pragma omp for` loop, then `release(scratch)`. A worksharing loop must be reached by every
// thread of the team or by none, so when any thread's allocation fails no thread runs `work`.
// Returns false in that case (the callers report VMDDPM_ERROR_OUT_OF_MEMORY).
template <typename Scratch, typename Allocate, typename Work, typename Release>
bool run_with_thread_scratch(bool use_threads, Allocate allocate, Work work, Release release) {
  bool out_of_memory = false;
#pragma omp parallel if (use_threads)
  {
    Scratch scratch{};
    const bool allocated = allocate(scratch);
    if (!allocated) {
#pragma omp atomic write
      out_of_memory = true;
    }
#pragma omp barrier
    bool any_failed;
#pragma omp atomic read
    any_failed = out_of_memory;
    if (!any_failed) work(scratch);
    if (allocated) release(scratch);
  }
  return !out_of_memory;
}

}  // namespace vmddpm::cpu

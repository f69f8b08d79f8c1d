// The selective scan for any CPU: built with the compiler's default target flags (SSE2 on
// x86-64), 4 float lanes per vector. The fallback when the CPU lacks AVX2/FMA, and the only
// build on other architectures.
#define VMDDPM_SIMD_LANES 4
#include "selective_scan_kernel.h"

namespace vmddpm::cpu {

int selective_scan_baseline(const SelectiveScanProblem& problem) {
  return run_selective_scan(problem);
}

}  // namespace vmddpm::cpu

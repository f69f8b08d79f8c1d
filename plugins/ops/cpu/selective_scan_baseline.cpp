// The selective scan (forward and backward) for any CPU: built with the compiler's default target flags (SSE2 on
// x86-64), 4 float lanes per vector. The fallback when the CPU lacks AVX2/FMA, and the only
// build on other architectures.
#define VMDDPM_SIMD_LANES 4
#include "selective_scan_backward_kernel.h"
#include "selective_scan_kernel.h"

namespace vmddpm::cpu {

int selective_scan_baseline(const SelectiveScanProblem& problem) {
  return run_selective_scan(problem);
}

int selective_scan_backward_baseline(const SelectiveScanBackwardProblem& problem) {
  return run_selective_scan_backward(problem);
}

}  // namespace vmddpm::cpu

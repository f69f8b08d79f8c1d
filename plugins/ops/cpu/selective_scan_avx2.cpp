// The selective scan (forward and backward) compiled for AVX2 + FMA: 8 float lanes per vector.
// CMake gives this file its instruction-set flags; selective_scan_cpu.cpp calls it only on a
// CPU that has them.
#define VMDDPM_SIMD_LANES 8
#include "selective_scan_backward_kernel.h"
#include "selective_scan_kernel.h"

namespace vmddpm::cpu {

int selective_scan_avx2(const SelectiveScanProblem& problem) {
  return run_selective_scan(problem);
}

int selective_scan_backward_avx2(const SelectiveScanBackwardProblem& problem) {
  return run_selective_scan_backward(problem);
}

}  // namespace vmddpm::cpu

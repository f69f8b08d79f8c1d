// C entry points of the CPU selective scan (forward and backward) and the run-time choice of
// instruction set.
#include <atomic>
#include <cstring>

#include "../abi/error.h"
#include "../abi/validate.h"
#include "vmddpm/ops.h"

namespace vmddpm::cpu {

int selective_scan_baseline(const SelectiveScanProblem& problem);
int selective_scan_backward_baseline(const SelectiveScanBackwardProblem& problem);
#ifdef VMDDPM_HAVE_AVX2
int selective_scan_avx2(const SelectiveScanProblem& problem);
int selective_scan_backward_avx2(const SelectiveScanBackwardProblem& problem);
#endif
#ifdef VMDDPM_HAVE_AVX512
int selective_scan_avx512(const SelectiveScanProblem& problem);
int selective_scan_backward_avx512(const SelectiveScanBackwardProblem& problem);
#endif

namespace {

struct IsaBuild {
  const char* name;
  int (*run)(const SelectiveScanProblem&);
  int (*run_backward)(const SelectiveScanBackwardProblem&);
  bool (*cpu_supports)();
};

bool always_supported() { return true; }

// CMake defines VMDDPM_HAVE_AVX2 / VMDDPM_HAVE_AVX512 only for x86-64 GCC/Clang builds, where
// __builtin_cpu_supports also checks that the OS saves the wider registers.
#ifdef VMDDPM_HAVE_AVX2
bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

#ifdef VMDDPM_HAVE_AVX512
bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma");
}
#endif

// Widest first, so "auto" takes the first one the CPU supports.
const IsaBuild kBuilds[] = {
#ifdef VMDDPM_HAVE_AVX512
    {"avx512", selective_scan_avx512, selective_scan_backward_avx512, cpu_has_avx512},
#endif
#ifdef VMDDPM_HAVE_AVX2
    {"avx2", selective_scan_avx2, selective_scan_backward_avx2, cpu_has_avx2},
#endif
    {"baseline", selective_scan_baseline, selective_scan_backward_baseline, always_supported},
};
constexpr int kBuildCount = sizeof kBuilds / sizeof kBuilds[0];

int widest_supported() {
  for (int i = 0; i < kBuildCount; ++i) {
    if (kBuilds[i].cpu_supports()) return i;
  }
  return kBuildCount - 1;
}

// Index into kBuilds; resolved on first use so loading the library runs no CPUID.
std::atomic<int> selected_build{-1};

const IsaBuild& current_build() {
  int index = selected_build.load(std::memory_order_relaxed);
  if (index < 0) {
    index = widest_supported();
    selected_build.store(index, std::memory_order_relaxed);
  }
  return kBuilds[index];
}

}  // namespace
}  // namespace vmddpm::cpu

extern "C" const char* vmddpm_cpu_isa(void) { return vmddpm::cpu::current_build().name; }

extern "C" int vmddpm_select_cpu_isa(const char* name) {
  using namespace vmddpm::cpu;
  return vmddpm::guard_abi_call("select_cpu_isa", [&] {
    if (name == nullptr) {
      return vmddpm::fail(VMDDPM_ERROR_INVALID_ARGUMENT, "select_cpu_isa: name is a null pointer");
    }
    if (std::strcmp(name, "auto") == 0) {
      selected_build.store(widest_supported());
      return static_cast<int>(VMDDPM_OK);
    }
    for (int i = 0; i < kBuildCount; ++i) {
      if (std::strcmp(name, kBuilds[i].name) != 0) continue;
      if (!kBuilds[i].cpu_supports()) {
        return vmddpm::fail(VMDDPM_ERROR_UNSUPPORTED,
                            "select_cpu_isa: this CPU cannot run the %s build", name);
      }
      selected_build.store(i);
      return static_cast<int>(VMDDPM_OK);
    }
    return vmddpm::fail(VMDDPM_ERROR_UNSUPPORTED,
                        "select_cpu_isa: '%s' is not compiled into this library (see "
                        "vmddpm_build_info)",
                        name);
  });
}

extern "C" int vmddpm_selective_scan_cpu(const void* u, const void* delta, const float* A,
                                         const void* B, const void* C, const float* D,
                                         const float* delta_bias, void* y, int64_t batch,
                                         int64_t channels, int64_t routes, int64_t state,
                                         int64_t length, int dtype, int delta_softplus) {
  const char* op = "selective_scan_cpu";
  return vmddpm::guard_abi_call(op, [&] {
    const vmddpm::SelectiveScanProblem problem{
        u,     delta,    A,      B,     C,      D,     delta_bias, y,
        batch, channels, routes, state, length, dtype, delta_softplus != 0};
    int status = vmddpm::validate_selective_scan(op, problem);
    if (status != VMDDPM_OK) return status;
    status = vmddpm::cpu::current_build().run(problem);
    if (status == VMDDPM_ERROR_OUT_OF_MEMORY) {
      return vmddpm::fail(status, "%s: could not allocate per-thread scratch memory", op);
    }
    return status;
  });
}

extern "C" int vmddpm_selective_scan_bwd_cpu(
    const float* u, const float* delta, const float* A, const float* B, const float* C,
    const float* D, const float* delta_bias, const float* dy, float* du, float* ddelta, float* dA,
    float* dB, float* dC, float* dD, float* ddelta_bias, int64_t batch, int64_t channels,
    int64_t routes, int64_t state, int64_t length, int delta_softplus) {
  const char* op = "selective_scan_bwd_cpu";
  return vmddpm::guard_abi_call(op, [&] {
    const vmddpm::SelectiveScanBackwardProblem problem{
        u,  delta, A,  B,  C,  D,  delta_bias, dy,    du,     ddelta, dA,
        dB, dC,    dD, ddelta_bias, batch,     channels, routes, state, length,
        delta_softplus != 0};
    int status = vmddpm::validate_selective_scan_backward(op, problem);
    if (status != VMDDPM_OK) return status;
    status = vmddpm::cpu::current_build().run_backward(problem);
    if (status == VMDDPM_ERROR_OUT_OF_MEMORY) {
      return vmddpm::fail(status, "%s: could not allocate scratch memory", op);
    }
    return status;
  });
}

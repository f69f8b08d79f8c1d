// Identity of the built library: ABI version, what was compiled in.
#include "vmddpm/ops.h"

// CMake passes these in; the defaults describe a build that defined nothing.
#ifndef VMDDPM_CPU_ISAS
#define VMDDPM_CPU_ISAS "baseline"
#endif
#ifndef VMDDPM_CUDA_ARCHS
#define VMDDPM_CUDA_ARCHS ""
#endif
#ifdef _OPENMP
#define VMDDPM_OPENMP_FLAG "1"
#else
#define VMDDPM_OPENMP_FLAG "0"
#endif
#ifdef VMDDPM_HAVE_CUDA
#define VMDDPM_CUDA_FLAG "1"
#else
#define VMDDPM_CUDA_FLAG "0"
#endif

#define VMDDPM_STRINGIFY_VALUE(x) #x
#define VMDDPM_STRINGIFY(x) VMDDPM_STRINGIFY_VALUE(x)

extern "C" int vmddpm_abi_version(void) { return VMDDPM_ABI_VERSION; }

extern "C" int vmddpm_has_cuda(void) {
#ifdef VMDDPM_HAVE_CUDA
  return 1;
#else
  return 0;
#endif
}

extern "C" const char* vmddpm_build_info(void) {
  return "abi=" VMDDPM_STRINGIFY(VMDDPM_ABI_VERSION) ";cpu_isas=" VMDDPM_CPU_ISAS
         ";openmp=" VMDDPM_OPENMP_FLAG ";cuda=" VMDDPM_CUDA_FLAG
         ";cuda_archs=" VMDDPM_CUDA_ARCHS;
}

// The _cuda entry points of a build without nvcc: present so every build exports the same
// symbols, and failing with a message that says how to get the real ones.
#include "error.h"
#include "vmddpm/ops.h"

namespace {
int no_cuda(const char* op) {
  vmddpm::clear_last_error();
  return vmddpm::fail(VMDDPM_ERROR_UNSUPPORTED,
                      "%s: this vmddpm_ops library was built without CUDA kernels; rebuild it "
                      "where nvcc is found (CMake option VMDDPM_CUDA=ON makes that required)",
                      op);
}
}  // namespace

extern "C" int vmddpm_selective_scan_cuda(const void*, const void*, const float*, const void*,
                                          const void*, const float*, const float*, void*,
                                          int64_t, int64_t, int64_t, int64_t, int64_t, int, int,
                                          void*) {
  return no_cuda("selective_scan_cuda");
}

extern "C" int vmddpm_cross_scan_cuda(const void*, const int64_t*, void*, int64_t, int64_t,
                                      int64_t, int64_t, int64_t, int, void*) {
  return no_cuda("cross_scan_cuda");
}

extern "C" int64_t vmddpm_cross_merge_cuda_workspace_bytes(int64_t, int64_t) {
  no_cuda("cross_merge_cuda_workspace_bytes");
  return -1;
}

extern "C" int vmddpm_cross_merge_cuda(const void*, const int64_t*, void*, void*, int64_t,
                                       int64_t, int64_t, int64_t, int64_t, int, void*) {
  return no_cuda("cross_merge_cuda");
}

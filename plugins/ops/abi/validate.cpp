#include "validate.h"

#include <cinttypes>
#include <initializer_list>

#include "error.h"

namespace vmddpm {
namespace {

int check_pointer(const char* op, const char* name, const void* pointer, size_t element_size) {
  if (pointer == nullptr) {
    return fail(VMDDPM_ERROR_INVALID_ARGUMENT, "%s: %s is a null pointer", op, name);
  }
  // Misaligned element pointers would be undefined behaviour in the kernels' loads.
  if (reinterpret_cast<uintptr_t>(pointer) % element_size != 0) {
    return fail(VMDDPM_ERROR_INVALID_ARGUMENT, "%s: %s is not aligned to its %zu-byte elements",
                op, name, element_size);
  }
  return VMDDPM_OK;
}

int check_positive(const char* op, const char* name, int64_t value) {
  if (value <= 0) {
    return fail(VMDDPM_ERROR_INVALID_ARGUMENT, "%s: %s must be positive, got %" PRId64, op, name,
                value);
  }
  return VMDDPM_OK;
}

int check_dtype(const char* op, int dtype) {
  if (dtype_size(dtype) == 0) {
    return fail(VMDDPM_ERROR_INVALID_ARGUMENT,
                "%s: unknown dtype %d (expected 0=float32, 1=float16, 2=bfloat16)", op, dtype);
  }
  return VMDDPM_OK;
}

// Kernels index with int64; a product that overflows it would index garbage.
int check_product_fits(const char* op, const char* what, std::initializer_list<int64_t> factors) {
  int64_t product = 1;
  for (int64_t factor : factors) {
    if (__builtin_mul_overflow(product, factor, &product)) {
      return fail(VMDDPM_ERROR_INVALID_ARGUMENT, "%s: %s overflows int64", op, what);
    }
  }
  return VMDDPM_OK;
}

// Sizes of a selective scan (forward or backward): positive, routes divide channels, state within
// VMDDPM_MAX_STATE, and every buffer's element count fits int64.
int check_scan_sizes(const char* op, int64_t batch, int64_t channels, int64_t routes,
                     int64_t state, int64_t length) {
  int status;
  const struct {
    const char* name;
    int64_t value;
  } sizes[] = {{"batch", batch},
               {"channels", channels},
               {"routes", routes},
               {"state", state},
               {"length", length}};
  for (const auto& entry : sizes) {
    if ((status = check_positive(op, entry.name, entry.value)) != VMDDPM_OK) return status;
  }
  if (channels % routes != 0) {
    return fail(VMDDPM_ERROR_INVALID_ARGUMENT,
                "%s: channels (%" PRId64 ") is not a multiple of routes (%" PRId64 ")", op,
                channels, routes);
  }
  if (state > VMDDPM_MAX_STATE) {
    return fail(VMDDPM_ERROR_INVALID_ARGUMENT,
                "%s: state (%" PRId64 ") exceeds VMDDPM_MAX_STATE (%d)", op, state,
                VMDDPM_MAX_STATE);
  }
  if ((status = check_product_fits(op, "batch*channels*length",
                                   {batch, channels, length})) != VMDDPM_OK)
    return status;
  return check_product_fits(op, "batch*routes*state*length",
                            {batch, routes, state, length});
}

}  // namespace

size_t dtype_size(int dtype) {
  switch (dtype) {
    case VMDDPM_DTYPE_FLOAT32:
      return 4;
    case VMDDPM_DTYPE_FLOAT16:
    case VMDDPM_DTYPE_BFLOAT16:
      return 2;
    default:
      return 0;
  }
}

int validate_selective_scan(const char* op, const SelectiveScanProblem& p) {
  int status;
  if ((status = check_dtype(op, p.dtype)) != VMDDPM_OK) return status;
  const size_t io_size = dtype_size(p.dtype);
  const struct {
    const char* name;
    const void* pointer;
    size_t element_size;
  } pointers[] = {{"u", p.u, io_size}, {"delta", p.delta, io_size}, {"A", p.A, 4},
                  {"B", p.B, io_size}, {"C", p.C, io_size},         {"D", p.D, 4},
                  {"delta_bias", p.delta_bias, 4}, {"y", p.y, io_size}};
  for (const auto& entry : pointers) {
    if ((status = check_pointer(op, entry.name, entry.pointer, entry.element_size)) != VMDDPM_OK)
      return status;
  }
  return check_scan_sizes(op, p.batch, p.channels, p.routes, p.state, p.length);
}

int validate_selective_scan_backward(const char* op, const SelectiveScanBackwardProblem& p) {
  const struct {
    const char* name;
    const float* pointer;
  } pointers[] = {{"u", p.u},   {"delta", p.delta},   {"A", p.A},   {"B", p.B},
                  {"C", p.C},   {"D", p.D},           {"delta_bias", p.delta_bias},
                  {"dy", p.dy}, {"du", p.du},         {"ddelta", p.ddelta},
                  {"dA", p.dA}, {"dB", p.dB},         {"dC", p.dC},
                  {"dD", p.dD}, {"ddelta_bias", p.ddelta_bias}};
  int status;
  for (const auto& entry : pointers) {
    if ((status = check_pointer(op, entry.name, entry.pointer, sizeof(float))) != VMDDPM_OK)
      return status;
  }
  return check_scan_sizes(op, p.batch, p.channels, p.routes, p.state, p.length);
}

int validate_cross(const char* op, const char* input_name, CrossProblem& p, int64_t height,
                   int64_t width) {
  int status;
  if ((status = check_dtype(op, p.dtype)) != VMDDPM_OK) return status;
  const size_t io_size = dtype_size(p.dtype);
  if ((status = check_pointer(op, input_name, p.in, io_size)) != VMDDPM_OK) return status;
  if ((status = check_pointer(op, "table", p.table, sizeof(int64_t))) != VMDDPM_OK) return status;
  if ((status = check_pointer(op, "out", p.out, io_size)) != VMDDPM_OK) return status;
  const struct {
    const char* name;
    int64_t value;
  } sizes[] = {{"batch", p.batch},
               {"dim", p.dim},
               {"height", height},
               {"width", width},
               {"routes", p.routes}};
  for (const auto& entry : sizes) {
    if ((status = check_positive(op, entry.name, entry.value)) != VMDDPM_OK) return status;
  }
  // Device code indexes tables with 32-bit positions (see cuda/cross_ops.cu).
  if ((status = check_product_fits(op, "height*width", {height, width})) != VMDDPM_OK)
    return status;
  if (height * width > INT32_MAX) {
    return fail(VMDDPM_ERROR_INVALID_ARGUMENT, "%s: height*width exceeds 2^31-1", op);
  }
  if ((status = check_product_fits(op, "batch*routes*dim*height*width",
                                   {p.batch, p.routes, p.dim, height, width})) != VMDDPM_OK)
    return status;
  p.length = height * width;
  return VMDDPM_OK;
}

}  // namespace vmddpm

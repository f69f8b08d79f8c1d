// Argument checks shared by the CPU and CUDA entry points: they only look at pointers and sizes,
// never dereference, so they serve host and device pointers alike.
#pragma once

#include <cstddef>
#include <cstdint>

#include "problem.h"

namespace vmddpm {

// Bytes per element of a vmddpm_dtype, or 0 for an unknown dtype.
size_t dtype_size(int dtype);

// Each returns VMDDPM_OK or records why not (prefixed with `op`) and returns the error status.
int validate_selective_scan(const char* op, const SelectiveScanProblem& problem);
int validate_selective_scan_backward(const char* op, const SelectiveScanBackwardProblem& problem);
// On success also sets problem.length = height * width (checked for overflow first).
int validate_cross(const char* op, const char* input_name, CrossProblem& problem,
                   int64_t height, int64_t width);

}  // namespace vmddpm

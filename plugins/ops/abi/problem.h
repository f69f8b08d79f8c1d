// The arguments of one op call, gathered once the C entry point has validated them. Plain
// structs without member functions: the CPU kernels are compiled once per instruction set and
// must share no inline code with each other (see cpu/selective_scan_kernel.h).
#pragma once

#include <cstdint>

namespace vmddpm {

struct SelectiveScanProblem {
  const void* u;
  const void* delta;
  const float* A;
  const void* B;
  const void* C;
  const float* D;
  const float* delta_bias;
  void* y;
  int64_t batch;
  int64_t channels;  // routes * dim
  int64_t routes;
  int64_t state;
  int64_t length;
  int dtype;  // vmddpm_dtype
  bool delta_softplus;
};

// Backward of the selective scan (fp32 only): the forward's inputs, dy, and the gradients to
// write, each laid out like the tensor it differentiates.
struct SelectiveScanBackwardProblem {
  const float* u;
  const float* delta;
  const float* A;
  const float* B;
  const float* C;
  const float* D;
  const float* delta_bias;
  const float* dy;
  float* du;
  float* ddelta;
  float* dA;
  float* dB;
  float* dC;
  float* dD;
  float* ddelta_bias;
  int64_t batch;
  int64_t channels;  // routes * dim
  int64_t routes;
  int64_t state;
  int64_t length;
  bool delta_softplus;
};

struct CrossProblem {
  const void* in;
  const int64_t* table;  // (routes, length)
  void* out;
  int64_t batch;
  int64_t dim;
  int64_t length;  // height * width
  int64_t routes;
  int dtype;  // vmddpm_dtype
};

}  // namespace vmddpm

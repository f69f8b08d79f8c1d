// CUDA cross_scan (gather by table) and cross_merge (gather-sum by the inverted table).
// One thread per output element, consecutive threads on consecutive outputs of a row, so
// stores are coalesced; the gathered reads follow the table.
#include <cuda_runtime.h>

#include <cstdint>

#include "../abi/error.h"
#include "../abi/validate.h"
#include "io_convert.cuh"
#include "launch_status.h"
#include "vmddpm/ops.h"

namespace vmddpm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridDim = 65535;  // grid-stride loops cover the rest

// Blocks over (position in a row) along x and (row) along y: a thread finds its row with one
// division per row rather than several 64-bit divisions per element.
dim3 grid_for(int64_t rows, int64_t length) {
  const int64_t x = (length + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(x < kMaxGridDim ? x : kMaxGridDim),
              static_cast<unsigned>(rows < kMaxGridDim ? rows : kMaxGridDim));
}

unsigned blocks_for(int64_t elements) {
  const int64_t blocks = (elements + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxGridDim ? blocks : kMaxGridDim);
}

// A gather moves elements without arithmetic, so it copies raw storage of the element's width.
// Output row (b, k, d) gathers from input row (b, d).
template <typename Storage>
__global__ void cross_scan_kernel(CrossProblem p) {
  const Storage* x = static_cast<const Storage*>(p.in);
  Storage* out = static_cast<Storage*>(p.out);
  const int64_t rows = p.batch * p.routes * p.dim;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t d = row % p.dim;
    const int64_t k = (row / p.dim) % p.routes;
    const int64_t b = row / (p.dim * p.routes);
    const Storage* source = x + (b * p.dim + d) * p.length;
    const int64_t* route = p.table + k * p.length;
    for (int64_t l = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; l < p.length;
         l += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const int64_t position = route[l];
      // A device table cannot be checked on the host; an entry off the grid reads nothing.
      out[row * p.length + l] =
          position >= 0 && position < p.length ? source[position] : Storage(0);
    }
  }
}

// inverse[k][table[k][l]] = l. Each row being a permutation, every slot is written once.
__global__ void invert_table_kernel(const int64_t* table, int32_t* inverse, int64_t routes,
                                    int64_t length) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       i < routes * length; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i / length;
    const int64_t position = table[i];
    if (position >= 0 && position < length) {
      inverse[k * length + position] = static_cast<int32_t>(i % length);
    }
  }
}

// out[b,d,p] = sum over k of ys[b,k,d,inverse[k][p]]: a gather, so no atomics; summed in fp32
// in route order (as the reference's index_add_ does) and rounded once. Row (b, d) of out.
template <typename T>
__global__ void cross_merge_kernel(CrossProblem p, const int32_t* inverse) {
  const T* ys = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  const int64_t rows = p.batch * p.dim;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t d = row % p.dim;
    const int64_t b = row / p.dim;
    for (int64_t position = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
         position < p.length; position += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      float sum = 0.0f;
      for (int64_t k = 0; k < p.routes; ++k) {
        const int32_t l = inverse[k * p.length + position];
        if (l >= 0) sum += to_float(ys[((b * p.routes + k) * p.dim + d) * p.length + l]);
      }
      out[row * p.length + position] = from_float<T>(sum);
    }
  }
}

}  // namespace
}  // namespace vmddpm::cuda

extern "C" int vmddpm_cross_scan_cuda(const void* x, const int64_t* table, void* out,
                                      int64_t batch, int64_t dim, int64_t height, int64_t width,
                                      int64_t routes, int dtype, void* stream) {
  using namespace vmddpm::cuda;
  const char* op = "cross_scan_cuda";
  return vmddpm::guard_abi_call(op, [&] {
    vmddpm::CrossProblem problem{x, table, out, batch, dim, 0, routes, dtype};
    const int status = vmddpm::validate_cross(op, "x", problem, height, width);
    if (status != VMDDPM_OK) return status;
    const dim3 grid = grid_for(batch * routes * dim, problem.length);
    const auto cuda_stream = static_cast<cudaStream_t>(stream);
    if (vmddpm::dtype_size(dtype) == 4) {
      cross_scan_kernel<uint32_t><<<grid, kThreads, 0, cuda_stream>>>(problem);
    } else {
      cross_scan_kernel<uint16_t><<<grid, kThreads, 0, cuda_stream>>>(problem);
    }
    return launch_status(op);
  });
}

extern "C" int64_t vmddpm_cross_merge_cuda_workspace_bytes(int64_t routes, int64_t length) {
  vmddpm::clear_last_error();
  if (routes <= 0 || length <= 0 || length > INT32_MAX || routes > INT64_MAX / 4 / length) {
    vmddpm::fail(VMDDPM_ERROR_INVALID_ARGUMENT,
                 "cross_merge_cuda_workspace_bytes: routes and length must be positive and "
                 "length below 2^31");
    return -1;
  }
  return routes * length * static_cast<int64_t>(sizeof(int32_t));
}

extern "C" int vmddpm_cross_merge_cuda(const void* ys, const int64_t* table, void* out,
                                       void* workspace, int64_t batch, int64_t dim,
                                       int64_t height, int64_t width, int64_t routes, int dtype,
                                       void* stream) {
  using namespace vmddpm::cuda;
  const char* op = "cross_merge_cuda";
  return vmddpm::guard_abi_call(op, [&] {
    vmddpm::CrossProblem problem{ys, table, out, batch, dim, 0, routes, dtype};
    const int status = vmddpm::validate_cross(op, "ys", problem, height, width);
    if (status != VMDDPM_OK) return status;
    if (workspace == nullptr || reinterpret_cast<uintptr_t>(workspace) % sizeof(int32_t) != 0) {
      return vmddpm::fail(VMDDPM_ERROR_INVALID_ARGUMENT,
                          "%s: workspace is null or not 4-byte aligned", op);
    }
    const auto cuda_stream = static_cast<cudaStream_t>(stream);
    auto* inverse = static_cast<int32_t*>(workspace);
    const int64_t table_size = routes * problem.length;
    // -1 marks grid positions no token of a route lands on (only with a non-permutation).
    if (cudaMemsetAsync(inverse, 0xff, table_size * sizeof(int32_t), cuda_stream) !=
        cudaSuccess) {
      return launch_status(op);
    }
    invert_table_kernel<<<blocks_for(table_size), kThreads, 0, cuda_stream>>>(
        table, inverse, routes, problem.length);
    const dim3 grid = grid_for(batch * dim, problem.length);
    switch (dtype) {
      case VMDDPM_DTYPE_FLOAT16:
        cross_merge_kernel<__half><<<grid, kThreads, 0, cuda_stream>>>(problem, inverse);
        break;
      case VMDDPM_DTYPE_BFLOAT16:
        cross_merge_kernel<__nv_bfloat16><<<grid, kThreads, 0, cuda_stream>>>(problem, inverse);
        break;
      default:
        cross_merge_kernel<float><<<grid, kThreads, 0, cuda_stream>>>(problem, inverse);
        break;
    }
    return launch_status(op);
  });
}

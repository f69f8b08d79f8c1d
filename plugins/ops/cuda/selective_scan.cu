// CUDA selective scan: fp32 math and state whatever the io dtype.
//
// A block owns 32 channels of one route and one batch row and walks the sequence in chunks.
// Each chunk is staged once, coalesced, into shared memory: u, dt = softplus(delta + bias)
// per channel, and the route's B and C rows, which all 32 channels share. Then every channel
// runs the recurrence over the chunk with its state in registers: a channel's N states are
// split over G = ceil(N / 8) neighbouring threads (a power of two, all in one warp), 8 states
// each, and y = C.h is summed across those G threads with warp shuffles. y goes back through
// shared memory so the global stores are coalesced too. Every input element is read from
// global memory once and y written once.
#include <cuda_runtime.h>

#include <cinttypes>
#include <climits>

#include "../abi/error.h"
#include "../abi/validate.h"
#include "io_convert.cuh"
#include "launch_status.h"
#include "vmddpm/ops.h"

namespace vmddpm::cuda {
namespace {

constexpr int kChannelsPerBlock = 32;
constexpr int kStatesPerThread = 8;
constexpr int kMaxSharedBytes = 48 * 1024;  // available to every GPU without an opt-in
constexpr float kLog2e = 1.4426950408889634f;

struct ScanLaunch {
  SelectiveScanProblem problem;
  int64_t dim;                // channels per route
  int64_t blocks_per_route;   // ceil(dim / kChannelsPerBlock)
  int threads_per_channel;    // G
  int chunk;                  // sequence steps staged per round
  int padded_state;           // G * kStatesPerThread >= state
};

template <typename T>
__global__ void selective_scan_kernel(ScanLaunch launch) {
  const SelectiveScanProblem& p = launch.problem;
  const T* u = static_cast<const T*>(p.u);
  const T* delta = static_cast<const T*>(p.delta);
  const T* B = static_cast<const T*>(p.B);
  const T* C = static_cast<const T*>(p.C);
  T* y = static_cast<T*>(p.y);
  const int64_t N = p.state;
  const int64_t L = p.length;

  // Rows are padded by one float so the 32 channels' rows start in different banks.
  const int stride = launch.chunk + 1;
  extern __shared__ float shared[];
  float* s_u = shared;                               // [kChannelsPerBlock][stride]
  float* s_dt = s_u + kChannelsPerBlock * stride;    // [kChannelsPerBlock][stride]
  float* s_y = s_dt + kChannelsPerBlock * stride;    // [kChannelsPerBlock][stride]
  float* s_B = s_y + kChannelsPerBlock * stride;     // [padded_state][stride]
  float* s_C = s_B + launch.padded_state * stride;   // [padded_state][stride]

  const int64_t block = blockIdx.x;
  const int64_t channel_block = block % launch.blocks_per_route;
  const int64_t route = (block / launch.blocks_per_route) % p.routes;
  const int64_t b = block / (launch.blocks_per_route * p.routes);
  const int64_t first_in_route = channel_block * kChannelsPerBlock;
  const int channels_here = static_cast<int>(
      launch.dim - first_in_route < kChannelsPerBlock ? launch.dim - first_in_route
                                                      : kChannelsPerBlock);
  const int64_t first_channel = route * launch.dim + first_in_route;

  const int G = launch.threads_per_channel;
  const int local_channel = threadIdx.x / G;
  const int part = threadIdx.x % G;  // which 8 of the channel's states this thread holds
  // Threads past the last channel still run the loop (the warp shuffles need every lane) on
  // a real channel's data, but never store.
  const bool active = local_channel < channels_here;
  const int row = active ? local_channel : 0;
  const int64_t channel = first_channel + row;

  float A2[kStatesPerThread];
  float h[kStatesPerThread];
#pragma unroll
  for (int j = 0; j < kStatesPerThread; ++j) {
    const int64_t n = part * kStatesPerThread + j;
    // exp(dt*A) = exp2(dt * A*log2(e)): one MUFU.EX2 per state and step.
    A2[j] = n < N ? p.A[channel * N + n] * kLog2e : 0.0f;
    h[j] = 0.0f;
  }
  const float D = p.D[channel];

  // Padding states (n >= N) see B = C = 0, so they stay 0 and add nothing.
  for (int i = threadIdx.x; i < (launch.padded_state - N) * stride; i += blockDim.x) {
    s_B[N * stride + i] = 0.0f;
    s_C[N * stride + i] = 0.0f;
  }

  for (int64_t l0 = 0; l0 < L; l0 += launch.chunk) {
    const int steps = static_cast<int>(L - l0 < launch.chunk ? L - l0 : launch.chunk);
    __syncthreads();  // the previous chunk's y has been stored
    for (int i = threadIdx.x; i < channels_here * steps; i += blockDim.x) {
      const int r = i / steps;
      const int t = i % steps;
      const int64_t index = (b * p.channels + first_channel + r) * L + l0 + t;
      s_u[r * stride + t] = to_float(u[index]);
      float dt = to_float(delta[index]) + p.delta_bias[first_channel + r];
      if (p.delta_softplus) dt = dt <= 20.0f ? log1pf(expf(dt)) : dt;  // torch's threshold
      s_dt[r * stride + t] = dt;
    }
    for (int i = threadIdx.x; i < N * steps; i += blockDim.x) {
      const int n = i / steps;
      const int t = i % steps;
      const int64_t index = ((b * p.routes + route) * N + n) * L + l0 + t;
      s_B[n * stride + t] = to_float(B[index]);
      s_C[n * stride + t] = to_float(C[index]);
    }
    __syncthreads();

    for (int t = 0; t < steps; ++t) {
      const float dt = s_dt[row * stride + t];
      const float u_t = s_u[row * stride + t];
      const float dt_u = dt * u_t;
      float partial = 0.0f;
#pragma unroll
      for (int j = 0; j < kStatesPerThread; ++j) {
        const int n = part * kStatesPerThread + j;
        h[j] = exp2f(dt * A2[j]) * h[j] + dt_u * s_B[n * stride + t];
        partial += h[j] * s_C[n * stride + t];
      }
      for (int offset = G / 2; offset > 0; offset /= 2) {
        partial += __shfl_xor_sync(0xffffffffu, partial, offset);
      }
      if (active && part == 0) s_y[row * stride + t] = partial + D * u_t;
    }
    __syncthreads();

    for (int i = threadIdx.x; i < channels_here * steps; i += blockDim.x) {
      const int r = i / steps;
      const int t = i % steps;
      y[(b * p.channels + first_channel + r) * L + l0 + t] = from_float<T>(s_y[r * stride + t]);
    }
  }
}

size_t shared_bytes(int chunk, int padded_state) {
  return static_cast<size_t>(3 * kChannelsPerBlock + 2 * padded_state) * (chunk + 1) *
         sizeof(float);
}

}  // namespace

int launch_status(const char* op) {
  const cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess) return VMDDPM_OK;
  return fail(VMDDPM_ERROR_CUDA, "%s: CUDA error %s: %s", op, cudaGetErrorName(error),
              cudaGetErrorString(error));
}

}  // namespace vmddpm::cuda

extern "C" int vmddpm_selective_scan_cuda(const void* u, const void* delta, const float* A,
                                          const void* B, const void* C, const float* D,
                                          const float* delta_bias, void* y, int64_t batch,
                                          int64_t channels, int64_t routes, int64_t state,
                                          int64_t length, int dtype, int delta_softplus,
                                          void* stream) {
  using namespace vmddpm::cuda;
  const char* op = "selective_scan_cuda";
  return vmddpm::guard_abi_call(op, [&] {
    ScanLaunch launch{};
    launch.problem = vmddpm::SelectiveScanProblem{
        u,     delta,    A,      B,     C,      D,     delta_bias, y,
        batch, channels, routes, state, length, dtype, delta_softplus != 0};
    int status = vmddpm::validate_selective_scan(op, launch.problem);
    if (status != VMDDPM_OK) return status;

    launch.dim = channels / routes;
    launch.blocks_per_route = (launch.dim + kChannelsPerBlock - 1) / kChannelsPerBlock;
    launch.threads_per_channel = 1;
    while (launch.threads_per_channel * kStatesPerThread < state) launch.threads_per_channel *= 2;
    launch.padded_state = launch.threads_per_channel * kStatesPerThread;
    launch.chunk = 64;
    while (launch.chunk > 8 && shared_bytes(launch.chunk, launch.padded_state) > kMaxSharedBytes)
      launch.chunk /= 2;
    const int64_t blocks = batch * routes * launch.blocks_per_route;
    if (blocks > INT_MAX) {
      return vmddpm::fail(VMDDPM_ERROR_INVALID_ARGUMENT,
                          "%s: batch*routes*ceil(dim/32) = %" PRId64 " blocks exceeds the grid",
                          op, blocks);
    }
    const dim3 grid(static_cast<unsigned>(blocks));
    const dim3 threads(kChannelsPerBlock * launch.threads_per_channel);
    const size_t shared = shared_bytes(launch.chunk, launch.padded_state);
    const auto cuda_stream = static_cast<cudaStream_t>(stream);
    switch (dtype) {
      case VMDDPM_DTYPE_FLOAT16:
        selective_scan_kernel<__half><<<grid, threads, shared, cuda_stream>>>(launch);
        break;
      case VMDDPM_DTYPE_BFLOAT16:
        selective_scan_kernel<__nv_bfloat16><<<grid, threads, shared, cuda_stream>>>(launch);
        break;
      default:
        selective_scan_kernel<float><<<grid, threads, shared, cuda_stream>>>(launch);
        break;
    }
    return launch_status(op);
  });
}

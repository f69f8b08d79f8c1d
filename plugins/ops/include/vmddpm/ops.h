/*
 * vmddpm ops: the op contract of docs/design.md section 2 behind a plain C ABI.
 *
 * One header for every caller: Python (ctypes), the TensorRT plugins and the C++ host. Only C
 * types cross it; no exception escapes it. Every entry point returns a vmddpm_status; on
 * failure vmddpm_last_error() describes what went wrong on the calling thread.
 *
 * Layouts (all row-major and contiguous; T is the io dtype named by `dtype`):
 *   u, delta      (batch, channels, length)   T        channels = routes * dim
 *   A             (channels, state)           float
 *   B, C          (batch, routes, state, length) T    route k drives channels k*dim..k*dim+dim-1
 *   D, delta_bias (channels,)                 float
 *   y             (batch, channels, length)   T
 *   math in fp32: dt = softplus(delta + delta_bias) (or without softplus);
 *                 h = exp(dt*A)*h + dt*B*u;  y = C.h + D*u
 *
 *   cross_scan:  x (batch, dim, height, width) -> out (batch, routes, dim, height*width)
 *                out[b,k,d,l] = x[b,d,table[k,l]]
 *   cross_merge: ys (batch, routes, dim, height*width) -> out (batch, dim, height, width)
 *                out[b,d,p] = sum over (k,l) with table[k,l] == p of ys[b,k,d,l]
 *                (summed in fp32, rounded to T once)
 *   table: (routes, height*width) int64, row-major positions h*width + w; each row of the
 *          tables vmddpm ships is a permutation of 0..height*width-1.
 *
 * The _cpu functions take host pointers. The _cuda twins take device pointers (the table too)
 * and a cudaStream_t passed as void*; they enqueue work and return without synchronising, so
 * a kernel fault surfaces at the caller's next synchronisation, as with any CUDA launch.
 */
#ifndef VMDDPM_OPS_H
#define VMDDPM_OPS_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(VMDDPM_BUILDING_OPS)
#    define VMDDPM_API __declspec(dllexport)
#  else
#    define VMDDPM_API __declspec(dllimport)
#  endif
#else
#  define VMDDPM_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature, layout or meaning below changes. */
#define VMDDPM_ABI_VERSION 2

/* Largest `state` (N) the kernels accept, as in mamba-ssm. */
#define VMDDPM_MAX_STATE 256

typedef enum vmddpm_dtype {
  VMDDPM_DTYPE_FLOAT32 = 0,
  VMDDPM_DTYPE_FLOAT16 = 1,
  VMDDPM_DTYPE_BFLOAT16 = 2
} vmddpm_dtype;

typedef enum vmddpm_status {
  VMDDPM_OK = 0,
  VMDDPM_ERROR_INVALID_ARGUMENT = 1, /* null pointer, bad size, unknown dtype, bad table */
  VMDDPM_ERROR_UNSUPPORTED = 2,      /* not compiled in (CUDA, a CPU instruction set) */
  VMDDPM_ERROR_CUDA = 3,             /* the CUDA runtime refused (no device, launch failure) */
  VMDDPM_ERROR_OUT_OF_MEMORY = 4,    /* host scratch allocation failed */
  VMDDPM_ERROR_INTERNAL = 5          /* a bug: please report it with the message */
} vmddpm_status;

/* VMDDPM_ABI_VERSION of the loaded library; callers compare it with the header they use. */
VMDDPM_API int vmddpm_abi_version(void);

/* Why the last call on this thread failed ("" after a success). Valid until the next call on
 * the same thread. */
VMDDPM_API const char* vmddpm_last_error(void);

/* 1 when the library was compiled with its CUDA kernels, else 0 (the _cuda functions then
 * return VMDDPM_ERROR_UNSUPPORTED). Says nothing about whether a GPU is present. */
VMDDPM_API int vmddpm_has_cuda(void);

/* One line "key=value;key=value" describing the build (CPU instruction sets compiled in,
 * OpenMP, CUDA architectures), for diagnostics. */
VMDDPM_API const char* vmddpm_build_info(void);

/* Name of the CPU instruction set the CPU selective scan runs with: "avx512", "avx2" or
 * "baseline". */
VMDDPM_API const char* vmddpm_cpu_isa(void);

/* Chooses the CPU instruction set: "auto" (the widest this CPU runs), "avx512", "avx2" or
 * "baseline". Fails with VMDDPM_ERROR_UNSUPPORTED when the set is not compiled in or the CPU
 * lacks it. Process-wide. */
VMDDPM_API int vmddpm_select_cpu_isa(const char* name);

VMDDPM_API int vmddpm_selective_scan_cpu(
    const void* u, const void* delta, const float* A, const void* B, const void* C,
    const float* D, const float* delta_bias, void* y,
    int64_t batch, int64_t channels, int64_t routes, int64_t state, int64_t length,
    int dtype, int delta_softplus);

/* Backward of vmddpm_selective_scan_cpu, for training; fp32 io only (callers widen fp16/bf16).
 * Given the forward's inputs and dy (batch, channels, length), writes the gradients du, ddelta
 * (laid out as u), dA (channels, state), dB, dC (as B), dD and ddelta_bias (channels); dA, dD and
 * ddelta_bias are summed over the batch, dB and dC over each route's channels. Every output is
 * overwritten, not accumulated. Results do not depend on the thread count. There is no CUDA
 * twin yet: on a GPU, differentiate the reference (vmddpm_deploy does). */
VMDDPM_API int vmddpm_selective_scan_bwd_cpu(
    const float* u, const float* delta, const float* A, const float* B, const float* C,
    const float* D, const float* delta_bias, const float* dy, float* du, float* ddelta,
    float* dA, float* dB, float* dC, float* dD, float* ddelta_bias,
    int64_t batch, int64_t channels, int64_t routes, int64_t state, int64_t length,
    int delta_softplus);

VMDDPM_API int vmddpm_cross_scan_cpu(
    const void* x, const int64_t* table, void* out,
    int64_t batch, int64_t dim, int64_t height, int64_t width, int64_t routes, int dtype);

VMDDPM_API int vmddpm_cross_merge_cpu(
    const void* ys, const int64_t* table, void* out,
    int64_t batch, int64_t dim, int64_t height, int64_t width, int64_t routes, int dtype);

VMDDPM_API int vmddpm_selective_scan_cuda(
    const void* u, const void* delta, const float* A, const void* B, const void* C,
    const float* D, const float* delta_bias, void* y,
    int64_t batch, int64_t channels, int64_t routes, int64_t state, int64_t length,
    int dtype, int delta_softplus, void* stream);

/* Device table entries outside 0..height*width-1 produce zeros (they cannot be checked on the
 * host without a synchronisation). */
VMDDPM_API int vmddpm_cross_scan_cuda(
    const void* x, const int64_t* table, void* out,
    int64_t batch, int64_t dim, int64_t height, int64_t width, int64_t routes, int dtype,
    void* stream);

/* Bytes of device workspace vmddpm_cross_merge_cuda needs (the inverted table), or -1 with
 * vmddpm_last_error() set for invalid sizes. */
VMDDPM_API int64_t vmddpm_cross_merge_cuda_workspace_bytes(int64_t routes, int64_t length);

/* Gathers instead of scattering, so it needs no atomics: it inverts the table into
 * `workspace` and sums over routes. That requires each table row to be a permutation of
 * 0..height*width-1; with a repeated entry only one of its tokens is counted. */
VMDDPM_API int vmddpm_cross_merge_cuda(
    const void* ys, const int64_t* table, void* out, void* workspace,
    int64_t batch, int64_t dim, int64_t height, int64_t width, int64_t routes, int dtype,
    void* stream);

#ifdef __cplusplus
}
#endif

#endif /* VMDDPM_OPS_H */

// The CPU selective scan, written once and compiled once per instruction set.
//
// Each selective_scan_<isa>.cpp defines VMDDPM_SIMD_LANES (floats per vector register), is
// compiled with that instruction set's flags, and wraps run_selective_scan() in an entry point
// that the dispatcher (selective_scan_cpu.cpp) picks at run time from the CPU's features.
// Everything here has internal linkage: were an inline helper shared, the linker could keep
// its AVX-512 copy for the baseline path too and crash CPUs without AVX-512. For the same
// reason this file includes no C++ library header that defines inline functions.
//
// Layout of the work: one SIMD lane per channel. A group of VMDDPM_SIMD_LANES channels of one
// route shares that route's B and C, so B[n, l] and C[n, l] are scalars broadcast to all lanes
// and y = C.h needs no horizontal sum; every state count N works, and for N = 16 the state
// stays in registers. Groups are independent, so threads split (batch, route, group) items.
// Along L the group walks chunks of kChunk steps: a chunk's inputs are widened to fp32 and
// transposed to [step][lane] in a small per-thread buffer that lives in L1.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "../abi/problem.h"
#include "half_convert.h"
#include "thread_scratch.h"
#include "vector_math.h"
#include "vmddpm/ops.h"

namespace vmddpm::cpu {
namespace {

constexpr int kChunk = 64;
constexpr int64_t kMinWorkForThreads = 1 << 16;  // below this, waking threads costs more

// Per-thread fp32 staging buffers, each 64-byte aligned for vector loads.
struct ScanScratch {
  float* u;        // [kChunk][kLanes]
  float* dt;       // [kChunk][kLanes]
  float* y;        // [kChunk][kLanes]
  float* B;        // [state][kChunk]
  float* C;        // [state][kChunk]
  float* A;        // [state][kLanes]
  float* h;        // [state][kLanes], used when the state count is not a template constant
  void* block;
};

inline int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

inline bool allocate_scratch(ScanScratch& scratch, int64_t state) {
  const int64_t lanes_chunk = round_up(kChunk * kLanes, 16);
  const int64_t state_chunk = round_up(state * kChunk, 16);
  const int64_t state_lanes = round_up(state * kLanes, 16);
  const int64_t floats = 3 * lanes_chunk + 2 * state_chunk + 2 * state_lanes;
  float* block = static_cast<float*>(std::aligned_alloc(64, floats * sizeof(float)));
  if (block == nullptr) return false;
  scratch.block = block;
  scratch.u = block;
  scratch.dt = scratch.u + lanes_chunk;
  scratch.y = scratch.dt + lanes_chunk;
  scratch.B = scratch.y + lanes_chunk;
  scratch.C = scratch.B + state_chunk;
  scratch.A = scratch.C + state_chunk;
  scratch.h = scratch.A + state_lanes;
  return true;
}

// The recurrence over one staged chunk. kState > 0 fixes N at compile time so that h and A
// live in registers; kState == 0 reads N from `state` and keeps h in the scratch buffer.
// kInRange: every |dt*A| of the chunk is known to be within kExp2InRangeBound, so exp2_product
// needs no clamps.
template <int kState, bool kInRange>
inline void scan_chunk(const ScanScratch& s, int64_t state, int steps, vfloat D_lanes,
                       vfloat* h_registers) {
  const int64_t n_count = kState > 0 ? kState : state;
  vfloat A_registers[kState > 0 ? kState : 1];
  if (kState > 0) {
    for (int n = 0; n < kState; ++n) A_registers[n] = load(s.A + n * kLanes);
  }
  for (int t = 0; t < steps; ++t) {
    const vfloat dt = load(s.dt + t * kLanes);
    const vfloat u = load(s.u + t * kLanes);
    const vfloat dt_u = dt * u;
    vfloat y = splat(0.0f);
#pragma GCC unroll 16
    for (int64_t n = 0; n < n_count; ++n) {
      const vfloat A = kState > 0 ? A_registers[n] : load(s.A + n * kLanes);
      vfloat h = kState > 0 ? h_registers[n] : load(s.h + n * kLanes);
      h = exp2_product<kInRange>(dt, A) * h + dt_u * s.B[n * kChunk + t];
      y += h * s.C[n * kChunk + t];
      if (kState > 0) {
        h_registers[n] = h;
      } else {
        store(s.h + n * kLanes, h);
      }
    }
    store(s.y + t * kLanes, y + D_lanes * u);
  }
}

#if defined(__AVX2__) && VMDDPM_SIMD_LANES == 8
// The AVX2 build's staging: an 8 x 8 block moves between 8 channel rows (8 consecutive steps
// each) and 8 step rows of the [step][lane] buffer in 24 shuffles, where the element-wise copy
// costs a scalar load and store per float; the scan's loop is at the core's instruction limit,
// so the copies' instructions count. In place: rows[i] in, rows[j] = column j out.
inline void transpose_8x8(__m256 rows[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(rows[0], rows[1]), t1 = _mm256_unpackhi_ps(rows[0], rows[1]);
  const __m256 t2 = _mm256_unpacklo_ps(rows[2], rows[3]), t3 = _mm256_unpackhi_ps(rows[2], rows[3]);
  const __m256 t4 = _mm256_unpacklo_ps(rows[4], rows[5]), t5 = _mm256_unpackhi_ps(rows[4], rows[5]);
  const __m256 t6 = _mm256_unpacklo_ps(rows[6], rows[7]), t7 = _mm256_unpackhi_ps(rows[6], rows[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
  rows[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  rows[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  rows[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  rows[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  rows[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  rows[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  rows[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  rows[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// source[lane * stride + t] (8 lanes, `steps` a multiple of 8) -> staged[t * 8 + lane].
inline void stage_rows(const float* source, int64_t stride, int steps, float* staged) {
  for (int t0 = 0; t0 < steps; t0 += 8) {
    __m256 rows[8];
    for (int lane = 0; lane < 8; ++lane) rows[lane] = _mm256_loadu_ps(source + lane * stride + t0);
    transpose_8x8(rows);
    for (int t = 0; t < 8; ++t) _mm256_store_ps(staged + (t0 + t) * 8, rows[t]);
  }
}

// The inverse: staged[t * 8 + lane] -> target[lane * stride + t].
inline void unstage_rows(const float* staged, int steps, float* target, int64_t stride) {
  for (int t0 = 0; t0 < steps; t0 += 8) {
    __m256 rows[8];
    for (int t = 0; t < 8; ++t) rows[t] = _mm256_load_ps(staged + (t0 + t) * 8);
    transpose_8x8(rows);
    for (int lane = 0; lane < 8; ++lane) _mm256_storeu_ps(target + lane * stride + t0, rows[lane]);
  }
}
constexpr bool kHasBlockStaging = true;
#else
// Never called (block_staging below is false without kHasBlockStaging); they let the shared
// scan_group compile for every instruction set.
constexpr bool kHasBlockStaging = false;
inline void stage_rows(const float*, int64_t, int, float*) {}
inline void unstage_rows(const float*, int, float*, int64_t) {}
#endif

// Scans channels first_channel .. first_channel+lanes-1 (all in `route`) of batch row `b`.
template <typename Io, int kState>
void scan_group(const SelectiveScanProblem& p, const ScanScratch& s, int64_t b, int64_t route,
                int64_t first_channel, int lanes) {
  using Storage = typename Io::Storage;
  const auto* u = static_cast<const Storage*>(p.u);
  const auto* delta = static_cast<const Storage*>(p.delta);
  const auto* B = static_cast<const Storage*>(p.B);
  const auto* C = static_cast<const Storage*>(p.C);
  auto* y = static_cast<Storage*>(p.y);
  const int64_t N = p.state;
  const int64_t L = p.length;

  // Lanes past `lanes` (the route's last, partial group) scan u = 0 with A = 0, so their h
  // stays 0, and are never written back: the hot loop needs no masks.
  alignas(64) float D_array[kLanes];
  alignas(64) float bias_array[kLanes];
  // max over n of |A*log2(e)| per lane; NaN if any is NaN (then no chunk takes the unclamped
  // exp2, see below).
  alignas(64) float A_magnitude_array[kLanes];
  for (int lane = 0; lane < kLanes; ++lane) {
    const bool active = lane < lanes;
    D_array[lane] = active ? p.D[first_channel + lane] : 0.0f;
    bias_array[lane] = active ? p.delta_bias[first_channel + lane] : 0.0f;
    float magnitude = 0.0f;
    for (int64_t n = 0; n < N; ++n) {
      // Staged as A*log2(e): the recurrence then needs exp2(dt*A') = exp(dt*A), one multiply
      // fewer per state and step (the same rewrite mamba-ssm's CUDA kernel uses).
      const float A_log2 =
          active ? p.A[(first_channel + lane) * N + n] * 1.44269504088896341f : 0.0f;
      s.A[n * kLanes + lane] = A_log2;
      s.h[n * kLanes + lane] = 0.0f;
      const float A_abs = A_log2 < 0.0f ? -A_log2 : A_log2;
      if (!(A_abs <= magnitude) && magnitude == magnitude) magnitude = A_abs;  // NaN sticks
    }
    A_magnitude_array[lane] = magnitude;
  }
  if (lanes < kLanes) {
    for (int i = 0; i < kChunk * kLanes; ++i) s.u[i] = s.dt[i] = 0.0f;
  }
  const vfloat D_lanes = load(D_array);
  const vfloat bias_lanes = load(bias_array);
  const vfloat A_magnitude = load(A_magnitude_array);
  vfloat h_registers[kState > 0 ? kState : 1];
  for (auto& h : h_registers) h = splat(0.0f);

  for (int64_t l0 = 0; l0 < L; l0 += kChunk) {
    const int steps = static_cast<int>(L - l0 < kChunk ? L - l0 : kChunk);
    const int64_t first_row = ((b * p.channels) + first_channel) * L + l0;
    // Whole 8 x 8 blocks of fp32 take the shuffle path; the rest is copied element-wise.
    const bool block_staging =
        kHasBlockStaging && sizeof(Storage) == sizeof(float) && lanes == kLanes && steps % 8 == 0;
    if (block_staging) {
      stage_rows(reinterpret_cast<const float*>(u) + first_row, L, steps, s.u);
      stage_rows(reinterpret_cast<const float*>(delta) + first_row, L, steps, s.dt);
    } else {
      for (int lane = 0; lane < lanes; ++lane) {
        const int64_t row = first_row + lane * L;
        for (int t = 0; t < steps; ++t) {
          s.u[t * kLanes + lane] = Io::to_float(u[row + t]);
          s.dt[t * kLanes + lane] = Io::to_float(delta[row + t]);
        }
      }
    }
    // The chunk's B and C rows are copied (and widened) into scratch rows kChunk floats apart,
    // fp32 too: read in place their rows lie L floats apart, and where L*4 bytes is a multiple
    // of 4 KiB the 2N rows a step reads all map to one L1 set, more than its 8 ways, so they
    // evict each other (the AVX2 build at (1, 512, 16, 4096), single-threaded: 24 ms in place,
    // 13 ms copied).
    const int64_t bc_offset = (b * p.routes + route) * N * L + l0;
    for (int64_t n = 0; n < N; ++n) {
      for (int t = 0; t < steps; ++t) {
        s.B[n * kChunk + t] = Io::to_float(B[bc_offset + n * L + t]);
        s.C[n * kChunk + t] = Io::to_float(C[bc_offset + n * L + t]);
      }
    }
    vfloat dt_magnitude = splat(0.0f);  // max |dt| over the chunk per lane (NaNs skipped)
    for (int t = 0; t < steps; ++t) {
      vfloat dt = load(s.dt + t * kLanes) + bias_lanes;
      if (p.delta_softplus) dt = softplus(dt);
      store(s.dt + t * kLanes, dt);
      dt_magnitude = max_with((vfloat)((vint)(dt) & 0x7fffffff), dt_magnitude);
    }
    // |dt*A'| <= max|dt| * max|A'| (A' = A*log2 e). The bound is rounded once, so the exact
    // one may exceed 126 by a relative 6e-8, far from the 126.5 at which k would reach -127.
    // A NaN dt gives a NaN h on both paths (dt*u is NaN), so it need not send the chunk to the
    // clamped one; an infinite dt or a NaN A does (the bound is then inf or NaN and the
    // comparison false).
    const vint in_range = dt_magnitude * A_magnitude <= splat(kExp2InRangeBound);
    bool chunk_in_range = true;
    for (int lane = 0; lane < kLanes; ++lane) chunk_in_range = chunk_in_range && in_range[lane];
    if (chunk_in_range) {
      scan_chunk<kState, true>(s, N, steps, D_lanes, h_registers);
    } else {
      scan_chunk<kState, false>(s, N, steps, D_lanes, h_registers);
    }
    if (block_staging) {
      unstage_rows(s.y, steps, reinterpret_cast<float*>(y) + first_row, L);
    } else {
      for (int lane = 0; lane < lanes; ++lane) {
        const int64_t row = first_row + lane * L;
        for (int t = 0; t < steps; ++t) y[row + t] = Io::from_float(s.y[t * kLanes + lane]);
      }
    }
  }
}

template <typename Io, int kState>
int scan_all_groups(const SelectiveScanProblem& p) {
  const int64_t dim = p.channels / p.routes;
  const int64_t groups_per_route = (dim + kLanes - 1) / kLanes;
  const int64_t items = p.batch * p.routes * groups_per_route;
  const bool use_threads =
      items > 1 && p.batch * p.channels * p.length * p.state >= kMinWorkForThreads;
  const bool allocated = run_with_thread_scratch<ScanScratch>(
      use_threads, [&](ScanScratch& scratch) { return allocate_scratch(scratch, p.state); },
      [&](ScanScratch& scratch) {
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; ++item) {
          const int64_t group = item % groups_per_route;
          const int64_t route = (item / groups_per_route) % p.routes;
          const int64_t b = item / (groups_per_route * p.routes);
          const int64_t first_in_route = group * kLanes;
          const int lanes =
              static_cast<int>(dim - first_in_route < kLanes ? dim - first_in_route : kLanes);
          scan_group<Io, kState>(p, scratch, b, route, route * dim + first_in_route, lanes);
        }
      },
      [](ScanScratch& scratch) { std::free(scratch.block); });
  return allocated ? VMDDPM_OK : VMDDPM_ERROR_OUT_OF_MEMORY;
}

template <typename Io>
int scan_typed(const SelectiveScanProblem& p) {
  // N = 16 is the model's state size (VMamba's d_state); other sizes take the generic loop.
  return p.state == 16 ? scan_all_groups<Io, 16>(p) : scan_all_groups<Io, 0>(p);
}

// Runs a validated problem; returns VMDDPM_OK or VMDDPM_ERROR_OUT_OF_MEMORY.
int run_selective_scan(const SelectiveScanProblem& p) {
  switch (p.dtype) {
    case VMDDPM_DTYPE_FLOAT16:
      return scan_typed<Float16Io>(p);
    case VMDDPM_DTYPE_BFLOAT16:
      return scan_typed<BFloat16Io>(p);
    default:
      return scan_typed<Float32Io>(p);
  }
}

}  // namespace
}  // namespace vmddpm::cpu

// Backward of the CPU selective scan (fp32), for training. Written once and compiled once per
// instruction set beside the forward (each selective_scan_<isa>.cpp includes both), under the
// same rule: internal linkage only, no C++ library header with inline functions.
//
// Forward, for channel c of route g and state n, with a_l = exp(dt_l A_cn):
//   h_l = a_l h_{l-1} + dt_l B_gnl u_l,          y_l = sum_n C_gnl h_l + D_c u_l
// Reverse mode walks l = L-1 .. 0 carrying the state's adjoint g_l = dLoss/dh_l:
//   g_l       = C_gnl dy_l + a_{l+1} g_{l+1}
//   dC_gnl   += dy_l h_l          dB_gnl += g_l dt_l u_l       (both summed over the route's channels)
//   q_l       = g_l a_l h_{l-1}   (the adjoint of dt_l A_cn, through a_l)
//   du_l      = D_c dy_l + dt_l sum_n g_l B_gnl
//   ddt_l     = sum_n q_l A_cn + u_l sum_n g_l B_gnl
//   dA_cn    += q_l dt_l          dD_c += dy_l u_l
//   ddelta_l  = ddt_l sigmoid(delta_l + bias_c)  (softplus' ; 1 without softplus),  dbias_c += ddelta_l
//
// Layout of the work, as in the forward: one SIMD lane per channel, groups of kLanes channels of
// one route, so B and C are scalars broadcast to all lanes. A task is one (batch row, route) with
// all of the route's groups, because dB and dC sum over the route's channels, i.e. over lanes and
// groups: the groups add their lanes' terms into one per-chunk buffer and the lanes are summed
// once per (step, state) for the whole route. No two tasks write the same dB, dC, du or ddelta
// element; dA, dD and dbias (summed over the batch too) get one row of partials per batch row,
// added up in batch order at the end, so results do not depend on the thread count.
//
// The reverse walk needs h_{l-1} at every step. Phase 1 runs the recurrence forward and keeps h
// only at the start of each chunk of kBackwardChunk steps (checkpoints); phase 2 walks the chunks
// last to first, recomputes a chunk's h and a from its checkpoint into a buffer that stays in
// cache, and runs the reverse recurrence over it. Memory per thread: about
// (dim / kLanes) * (L / kBackwardChunk) * N * kLanes floats of checkpoints.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../abi/problem.h"
#include "selective_scan_kernel.h"
#include "thread_scratch.h"
#include "vector_math.h"
#include "vmddpm/ops.h"

namespace vmddpm::cpu {
namespace {

constexpr int kBackwardChunk = 32;
constexpr float kLog2e = 1.44269504088896341f;

struct BackwardScratch {
  int64_t groups;      // groups of kLanes channels per route
  int64_t chunks;      // ceil(L / kBackwardChunk)
  float* checkpoints;  // [groups][chunks][N][kLanes] h before each chunk's first step
  float* A;            // [groups][N][kLanes]
  float* A_log2;       // [groups][N][kLanes] A*log2(e), for exp2 (as in the forward)
  float* D;            // [groups][kLanes]
  float* bias;         // [groups][kLanes]
  float* grad_h;       // [groups][N][kLanes] the state adjoint carried between chunks
  float* dA;           // [groups][N][kLanes] per-lane sums over the batch row's steps
  float* dD;           // [groups][kLanes]
  float* dbias;        // [groups][kLanes]
  float* h;            // [kBackwardChunk][N][kLanes] states of the chunk being reversed
  float* a;            // [kBackwardChunk][N][kLanes] their decay factors exp(dt A)
  float* dB_lanes;     // [kBackwardChunk][N][kLanes] per-lane dB terms of the chunk, all groups
  float* dC_lanes;     // [kBackwardChunk][N][kLanes]
  float* u;            // [kBackwardChunk][kLanes], and the rest of the staged chunk rows
  float* dt;
  float* dy;
  float* dsoftplus;    // d dt / d delta
  float* du;
  float* ddelta;
  void* block;
};

inline bool allocate_backward_scratch(BackwardScratch& s, int64_t groups, int64_t chunks,
                                      int64_t state) {
  const int64_t group_states = round_up(groups * state * kLanes, 16);
  const int64_t group_lanes = round_up(groups * kLanes, 16);
  const int64_t chunk_states = round_up(kBackwardChunk * state * kLanes, 16);
  const int64_t chunk_lanes = round_up(kBackwardChunk * kLanes, 16);
  const int64_t checkpoint_floats = round_up(groups * chunks * state * kLanes, 16);
  const int64_t floats = checkpoint_floats + 4 * group_states + 4 * group_lanes +
                         4 * chunk_states + 6 * chunk_lanes;
  float* next = static_cast<float*>(std::aligned_alloc(64, floats * sizeof(float)));
  if (next == nullptr) return false;
  s.block = next;
  s.groups = groups;
  s.chunks = chunks;
  auto take = [&next](int64_t count) {
    float* start = next;
    next += count;
    return start;
  };
  s.checkpoints = take(checkpoint_floats);
  s.A = take(group_states);
  s.A_log2 = take(group_states);
  s.grad_h = take(group_states);
  s.dA = take(group_states);
  s.D = take(group_lanes);
  s.bias = take(group_lanes);
  s.dD = take(group_lanes);
  s.dbias = take(group_lanes);
  s.h = take(chunk_states);
  s.a = take(chunk_states);
  s.dB_lanes = take(chunk_states);
  s.dC_lanes = take(chunk_states);
  s.u = take(chunk_lanes);
  s.dt = take(chunk_lanes);
  s.dy = take(chunk_lanes);
  s.dsoftplus = take(chunk_lanes);
  s.du = take(chunk_lanes);
  s.ddelta = take(chunk_lanes);
  return true;
}

// kLanes channels of one route in one batch row; lanes past `lanes` (the route's last, partial
// group) run with u = dy = 0 and A = 0, so every term they add to dB and dC is exactly 0.
struct ChannelGroup {
  int64_t index;  // within the route
  int64_t first_channel;
  int lanes;
};

// Copies steps l0 .. l0+steps-1 of the group's rows of `source` (batch, channels, L) into
// out[step][lane], zeros in the inactive lanes.
inline void stage_rows(const float* source, const SelectiveScanBackwardProblem& p, int64_t b,
                       const ChannelGroup& group, int64_t l0, int steps, float* out) {
  std::memset(out, 0, sizeof(float) * kBackwardChunk * kLanes);
  for (int lane = 0; lane < group.lanes; ++lane) {
    const float* row = source + (b * p.channels + group.first_channel + lane) * p.length + l0;
    for (int t = 0; t < steps; ++t) out[t * kLanes + lane] = row[t];
  }
}

// Writes out[step][lane] back to the group's rows of `target` (batch, channels, L).
inline void unstage_rows(const float* in, const SelectiveScanBackwardProblem& p, int64_t b,
                         const ChannelGroup& group, int64_t l0, int steps, float* target) {
  for (int lane = 0; lane < group.lanes; ++lane) {
    float* row = target + (b * p.channels + group.first_channel + lane) * p.length + l0;
    for (int t = 0; t < steps; ++t) row[t] = in[t * kLanes + lane];
  }
}

// Stages u and dt = softplus(delta + bias) of a chunk; with `for_gradients` also dy and
// d dt / d delta = sigmoid(delta + bias) (torch's softplus gradient; it rounds to 1 above 20,
// where softplus turns linear).
inline void stage_chunk(const SelectiveScanBackwardProblem& p, const BackwardScratch& s,
                        int64_t b, const ChannelGroup& group, int64_t l0, int steps,
                        bool for_gradients) {
  stage_rows(p.u, p, b, group, l0, steps, s.u);
  stage_rows(p.delta, p, b, group, l0, steps, s.dt);
  const vfloat bias = load(s.bias + group.index * kLanes);
  for (int t = 0; t < steps; ++t) {
    const vfloat raw = load(s.dt + t * kLanes) + bias;
    store(s.dt + t * kLanes, p.delta_softplus ? softplus(raw) : raw);
    if (for_gradients) {
      const vfloat sigmoid = 1.0f / (1.0f + exp2_approx(-raw * kLog2e));
      store(s.dsoftplus + t * kLanes, p.delta_softplus ? sigmoid : splat(1.0f));
    }
  }
  if (for_gradients) stage_rows(p.dy, p, b, group, l0, steps, s.dy);
}

// Phase 1: the forward recurrence over the whole sequence, keeping h at each chunk's start.
template <int kState>
void write_checkpoints(const SelectiveScanBackwardProblem& p, const BackwardScratch& s, int64_t b,
                       const float* B, const ChannelGroup& group) {
  const int64_t N = p.state, L = p.length;
  const int64_t n_count = kState > 0 ? kState : N;
  const float* A_log2 = s.A_log2 + group.index * N * kLanes;
  vfloat h[kState > 0 ? kState : VMDDPM_MAX_STATE];
  for (int64_t n = 0; n < n_count; ++n) h[n] = splat(0.0f);
  for (int64_t chunk = 0; chunk < s.chunks; ++chunk) {
    const int64_t l0 = chunk * kBackwardChunk;
    const int steps = static_cast<int>(L - l0 < kBackwardChunk ? L - l0 : kBackwardChunk);
    float* checkpoint = s.checkpoints + (group.index * s.chunks + chunk) * N * kLanes;
    for (int64_t n = 0; n < n_count; ++n) store(checkpoint + n * kLanes, h[n]);
    stage_chunk(p, s, b, group, l0, steps, false);
    for (int t = 0; t < steps; ++t) {
      const vfloat dt = load(s.dt + t * kLanes);
      const vfloat dt_u = dt * load(s.u + t * kLanes);
#pragma GCC unroll 16
      for (int64_t n = 0; n < n_count; ++n) {
        h[n] = exp2_product<false>(dt, load(A_log2 + n * kLanes)) * h[n] + dt_u * B[n * L + l0 + t];
      }
    }
  }
}

// Phase 2, one chunk of one group: recompute the chunk's h and a, then walk it backwards,
// adding the group's lanes' dB and dC terms to s.dB_lanes / s.dC_lanes.
template <int kState>
void reverse_chunk(const SelectiveScanBackwardProblem& p, const BackwardScratch& s, int64_t b,
                   const float* B, const float* C, const ChannelGroup& group, int64_t chunk) {
  const int64_t N = p.state, L = p.length;
  const int64_t n_count = kState > 0 ? kState : N;
  const int64_t l0 = chunk * kBackwardChunk;
  const int steps = static_cast<int>(L - l0 < kBackwardChunk ? L - l0 : kBackwardChunk);
  const float* A = s.A + group.index * N * kLanes;
  const float* A_log2 = s.A_log2 + group.index * N * kLanes;
  const float* checkpoint = s.checkpoints + (group.index * s.chunks + chunk) * N * kLanes;
  stage_chunk(p, s, b, group, l0, steps, true);

  vfloat h[kState > 0 ? kState : VMDDPM_MAX_STATE];
  for (int64_t n = 0; n < n_count; ++n) h[n] = load(checkpoint + n * kLanes);
  for (int t = 0; t < steps; ++t) {
    const vfloat dt = load(s.dt + t * kLanes);
    const vfloat dt_u = dt * load(s.u + t * kLanes);
#pragma GCC unroll 16
    for (int64_t n = 0; n < n_count; ++n) {
      const vfloat a = exp2_product<false>(dt, load(A_log2 + n * kLanes));
      h[n] = a * h[n] + dt_u * B[n * L + l0 + t];
      store(s.a + (t * N + n) * kLanes, a);
      store(s.h + (t * N + n) * kLanes, h[n]);
    }
  }

  // The group's running state adjoint and dA live in locals across the walk (registers when N
  // is a compile-time constant), so the stores into the scratch rows cannot alias them.
  vfloat grad_h[kState > 0 ? kState : VMDDPM_MAX_STATE];
  vfloat dA[kState > 0 ? kState : VMDDPM_MAX_STATE];
  vfloat A_lanes[kState > 0 ? kState : VMDDPM_MAX_STATE];
  for (int64_t n = 0; n < n_count; ++n) {
    grad_h[n] = load(s.grad_h + (group.index * N + n) * kLanes);
    dA[n] = load(s.dA + (group.index * N + n) * kLanes);
    A_lanes[n] = load(A + n * kLanes);
  }
  vfloat dD = load(s.dD + group.index * kLanes);
  vfloat dbias = load(s.dbias + group.index * kLanes);
  const vfloat D = load(s.D + group.index * kLanes);
  for (int t = steps - 1; t >= 0; --t) {
    const int64_t l = l0 + t;
    const vfloat dy = load(s.dy + t * kLanes);
    const vfloat u = load(s.u + t * kLanes);
    const vfloat dt = load(s.dt + t * kLanes);
    const vfloat dt_u = dt * u;
    const float* h_prev = t > 0 ? s.h + (t - 1) * N * kLanes : checkpoint;
    vfloat sum_gB = splat(0.0f), sum_qA = splat(0.0f);
#pragma GCC unroll 16
    for (int64_t n = 0; n < n_count; ++n) {
      const int64_t at = (t * N + n) * kLanes;
      const vfloat a = load(s.a + at);
      const vfloat g = grad_h[n] + C[n * L + l] * dy;
      const vfloat q = g * a * load(h_prev + n * kLanes);
      store(s.dC_lanes + at, load(s.dC_lanes + at) + dy * load(s.h + at));
      store(s.dB_lanes + at, load(s.dB_lanes + at) + g * dt_u);
      sum_gB += g * B[n * L + l];
      sum_qA += q * A_lanes[n];
      dA[n] += q * dt;
      grad_h[n] = g * a;
    }
    const vfloat ddelta = (sum_qA + u * sum_gB) * load(s.dsoftplus + t * kLanes);
    store(s.du + t * kLanes, D * dy + dt * sum_gB);
    store(s.ddelta + t * kLanes, ddelta);
    dD += dy * u;
    dbias += ddelta;
  }
  for (int64_t n = 0; n < n_count; ++n) {
    store(s.grad_h + (group.index * N + n) * kLanes, grad_h[n]);
    store(s.dA + (group.index * N + n) * kLanes, dA[n]);
  }
  store(s.dD + group.index * kLanes, dD);
  store(s.dbias + group.index * kLanes, dbias);
  unstage_rows(s.du, p, b, group, l0, steps, p.du);
  unstage_rows(s.ddelta, p, b, group, l0, steps, p.ddelta);
}

// One (batch row, route). Writes that row's du, ddelta, the route's dB and dC, and the row's
// partials dA_rows (channels, N), dD_rows and dbias_rows (channels).
template <int kState>
void backward_task(const SelectiveScanBackwardProblem& p, const BackwardScratch& s, int64_t b,
                   int64_t route, float* dA_rows, float* dD_rows, float* dbias_rows) {
  const int64_t N = p.state, L = p.length;
  const int64_t dim = p.channels / p.routes;
  const int64_t bc_offset = (b * p.routes + route) * N * L;
  const float* B = p.B + bc_offset;
  const float* C = p.C + bc_offset;
  auto group_at = [&](int64_t index) {
    const int64_t first_in_route = index * kLanes;
    const int lanes = static_cast<int>(dim - first_in_route < kLanes ? dim - first_in_route : kLanes);
    return ChannelGroup{index, route * dim + first_in_route, lanes};
  };

  for (int64_t index = 0; index < s.groups; ++index) {
    const ChannelGroup group = group_at(index);
    for (int lane = 0; lane < kLanes; ++lane) {
      const bool active = lane < group.lanes;
      const int64_t c = group.first_channel + lane;
      s.D[index * kLanes + lane] = active ? p.D[c] : 0.0f;
      s.bias[index * kLanes + lane] = active ? p.delta_bias[c] : 0.0f;
      s.dD[index * kLanes + lane] = s.dbias[index * kLanes + lane] = 0.0f;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t at = (index * N + n) * kLanes + lane;
        s.A[at] = active ? p.A[c * N + n] : 0.0f;
        s.A_log2[at] = s.A[at] * kLog2e;
        s.grad_h[at] = s.dA[at] = 0.0f;
      }
    }
    write_checkpoints<kState>(p, s, b, B, group);
  }

  float* dB = p.dB + bc_offset;
  float* dC = p.dC + bc_offset;
  for (int64_t chunk = s.chunks - 1; chunk >= 0; --chunk) {
    const int64_t l0 = chunk * kBackwardChunk;
    const int steps = static_cast<int>(L - l0 < kBackwardChunk ? L - l0 : kBackwardChunk);
    std::memset(s.dB_lanes, 0, sizeof(float) * steps * N * kLanes);
    std::memset(s.dC_lanes, 0, sizeof(float) * steps * N * kLanes);
    for (int64_t index = 0; index < s.groups; ++index) {
      reverse_chunk<kState>(p, s, b, B, C, group_at(index), chunk);
    }
    for (int t = 0; t < steps; ++t) {
      for (int64_t n = 0; n < N; ++n) {
        const vfloat dB_terms = load(s.dB_lanes + (t * N + n) * kLanes);
        const vfloat dC_terms = load(s.dC_lanes + (t * N + n) * kLanes);
        float dB_sum = 0.0f, dC_sum = 0.0f;
        for (int lane = 0; lane < kLanes; ++lane) {
          dB_sum += dB_terms[lane];
          dC_sum += dC_terms[lane];
        }
        dB[n * L + l0 + t] = dB_sum;
        dC[n * L + l0 + t] = dC_sum;
      }
    }
  }

  for (int64_t index = 0; index < s.groups; ++index) {
    const ChannelGroup group = group_at(index);
    for (int lane = 0; lane < group.lanes; ++lane) {
      const int64_t c = group.first_channel + lane;
      dD_rows[b * p.channels + c] = s.dD[index * kLanes + lane];
      dbias_rows[b * p.channels + c] = s.dbias[index * kLanes + lane];
      for (int64_t n = 0; n < N; ++n) {
        dA_rows[(b * p.channels + c) * N + n] = s.dA[(index * N + n) * kLanes + lane];
      }
    }
  }
}

template <int kState>
int backward_all_tasks(const SelectiveScanBackwardProblem& p, float* dA_rows, float* dD_rows,
                       float* dbias_rows) {
  const int64_t dim = p.channels / p.routes;
  const int64_t groups = (dim + kLanes - 1) / kLanes;
  const int64_t chunks = (p.length + kBackwardChunk - 1) / kBackwardChunk;
  const int64_t tasks = p.batch * p.routes;
  const bool allocated = run_with_thread_scratch<BackwardScratch>(
      tasks > 1,
      [&](BackwardScratch& scratch) {
        return allocate_backward_scratch(scratch, groups, chunks, p.state);
      },
      [&](BackwardScratch& scratch) {
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < tasks; ++task) {
          backward_task<kState>(p, scratch, task / p.routes, task % p.routes, dA_rows, dD_rows,
                                dbias_rows);
        }
      },
      [](BackwardScratch& scratch) { std::free(scratch.block); });
  return allocated ? VMDDPM_OK : VMDDPM_ERROR_OUT_OF_MEMORY;
}

// Runs a validated problem; returns VMDDPM_OK or VMDDPM_ERROR_OUT_OF_MEMORY.
int run_selective_scan_backward(const SelectiveScanBackwardProblem& p) {
  const int64_t rows = p.batch * p.channels;
  float* partials = static_cast<float*>(std::malloc(sizeof(float) * rows * (p.state + 2)));
  if (partials == nullptr) return VMDDPM_ERROR_OUT_OF_MEMORY;
  float* dA_rows = partials;  // (batch, channels, N)
  float* dD_rows = dA_rows + rows * p.state;
  float* dbias_rows = dD_rows + rows;
  // N = 16 is the model's state size; other sizes take the generic loops.
  const int status = p.state == 16 ? backward_all_tasks<16>(p, dA_rows, dD_rows, dbias_rows)
                                   : backward_all_tasks<0>(p, dA_rows, dD_rows, dbias_rows);
  if (status == VMDDPM_OK) {
    // Sum the batch rows' partials in row order: deterministic whatever the thread count.
    const int64_t per_row = p.channels * p.state;
    for (int64_t i = 0; i < per_row; ++i) {
      float total = 0.0f;
      for (int64_t b = 0; b < p.batch; ++b) total += dA_rows[b * per_row + i];
      p.dA[i] = total;
    }
    for (int64_t c = 0; c < p.channels; ++c) {
      float dD = 0.0f, dbias = 0.0f;
      for (int64_t b = 0; b < p.batch; ++b) {
        dD += dD_rows[b * p.channels + c];
        dbias += dbias_rows[b * p.channels + c];
      }
      p.dD[c] = dD;
      p.ddelta_bias[c] = dbias;
    }
  }
  std::free(partials);
  return status;
}

}  // namespace
}  // namespace vmddpm::cpu

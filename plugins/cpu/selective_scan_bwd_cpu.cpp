// Backward of the CPU selective scan (fp32 io), for training.
//
// Forward, per channel c of route g and state n (design.md section 2):
//   dt_l = softplus(delta_l + bias_c)        (or delta_l + bias_c)
//   a_l  = exp(dt_l A_cn),  h_l = a_l h_{l-1} + dt_l B_gnl u_l,  y_l = sum_n C_gnl h_l + D_c u_l
// Reverse mode walks l = L-1 .. 0 with the adjoint of the state, g_l = dL/dh_l:
//   g_l = C_gnl dy_l + a_{l+1} g_{l+1}
//   dC_gnl += dy_l h_l                 dB_gnl += g_l dt_l u_l
//   du_l    = D_c dy_l + sum_n g_l dt_l B_gnl
//   ddt_l   = sum_n g_l (h_{l-1} a_l A_cn + B_gnl u_l)
//   dA_cn  += g_l h_{l-1} a_l dt_l     dD_c += dy_l u_l
//   ddelta_l = ddt_l * sigmoid(delta_l + bias_c) (softplus') ;  dbias_c += ddelta_l
//
// Work split: one task per (batch row, route). A task owns its route's dB and dC rows (summed
// over the route's channels) and writes dA, dD, dbias partials for its batch row, summed over
// rows afterwards, so no two threads write the same float. The states h and factors a of one
// channel are kept for the whole sequence ([L][N] each), and B, C are transposed to [L][N], so
// the inner loop over N is contiguous and the compiler vectorises it (with glibc's vector expf
// under -ffast-math, which CMake sets for this file only).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../abi/error.h"
#include "../abi/validate.h"
#include "vmddpm/ops.h"

namespace vmddpm::cpu {
namespace {

struct BackwardProblem {
  const float* u;           // (batch, channels, L)
  const float* delta;       // (batch, channels, L)
  const float* A;           // (channels, N)
  const float* B;           // (batch, routes, N, L)
  const float* C;           // (batch, routes, N, L)
  const float* D;           // (channels,)
  const float* delta_bias;  // (channels,)
  const float* dy;          // (batch, channels, L)
  float* du;
  float* ddelta;
  float* dB;
  float* dC;
  float* dA_rows;      // (batch, channels, N) partials
  float* dD_rows;      // (batch, channels)
  float* dbias_rows;   // (batch, channels)
  int64_t batch, channels, routes, state, length;
  bool delta_softplus;
};

inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Scratch of one task: [L][N] buffers for B, C (transposed), their gradients, h and a.
struct TaskScratch {
  std::vector<float> Bt, Ct, dBt, dCt, h, a, dt;
  explicit TaskScratch(int64_t L, int64_t N)
      : Bt(L * N), Ct(L * N), dBt(L * N), dCt(L * N), h(L * N), a(L * N), dt(L) {}
};

void transpose_in(const float* rows, float* out, int64_t N, int64_t L) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t l = 0; l < L; ++l) out[l * N + n] = rows[n * L + l];
}

void transpose_out(const float* in, float* rows, int64_t N, int64_t L) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t l = 0; l < L; ++l) rows[n * L + l] = in[l * N + n];
}

void backward_task(const BackwardProblem& p, TaskScratch& s, int64_t b, int64_t g) {
  const int64_t N = p.state, L = p.length;
  const int64_t dim = p.channels / p.routes;
  const int64_t bc = (b * p.routes + g) * N * L;
  transpose_in(p.B + bc, s.Bt.data(), N, L);
  transpose_in(p.C + bc, s.Ct.data(), N, L);
  std::fill(s.dBt.begin(), s.dBt.end(), 0.0f);
  std::fill(s.dCt.begin(), s.dCt.end(), 0.0f);
  float* __restrict h_all = s.h.data();
  float* __restrict a_all = s.a.data();
  const float* __restrict Bt = s.Bt.data();
  const float* __restrict Ct = s.Ct.data();
  float* __restrict dBt = s.dBt.data();
  float* __restrict dCt = s.dCt.data();
  std::vector<float> grad_h(N), dA_acc(N);

  for (int64_t c = g * dim; c < (g + 1) * dim; ++c) {
    const int64_t row = (b * p.channels + c) * L;
    const float* u = p.u + row;
    const float* delta = p.delta + row;
    const float* dy = p.dy + row;
    const float* A = p.A + c * N;
    const float D = p.D[c], bias = p.delta_bias[c];

    // Forward again, keeping h_l and a_l.
    for (int64_t l = 0; l < L; ++l) {
      const float raw = delta[l] + bias;
      const float dt = p.delta_softplus ? softplus(raw) : raw;
      s.dt[l] = dt;
      const float dt_u = dt * u[l];
      const float* h_prev = l > 0 ? h_all + (l - 1) * N : nullptr;
      float* h = h_all + l * N;
      float* a = a_all + l * N;
      const float* Bl = Bt + l * N;
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) {
        a[n] = std::exp(dt * A[n]);
        h[n] = (h_prev ? a[n] * h_prev[n] : 0.0f) + dt_u * Bl[n];
      }
    }

    // Backward.
    std::fill(grad_h.begin(), grad_h.end(), 0.0f);
    std::fill(dA_acc.begin(), dA_acc.end(), 0.0f);
    float dD = 0.0f, dbias = 0.0f;
    float* __restrict gh = grad_h.data();
    float* __restrict dA = dA_acc.data();
    for (int64_t l = L - 1; l >= 0; --l) {
      const float dy_l = dy[l], u_l = u[l], dt = s.dt[l];
      const float* h = h_all + l * N;
      const float* a = a_all + l * N;
      const float* Bl = Bt + l * N;
      const float* Cl = Ct + l * N;
      float* dBl = dBt + l * N;
      float* dCl = dCt + l * N;
      float ddt = 0.0f, du = D * dy_l;
      if (l > 0) {
        const float* h_prev = h_all + (l - 1) * N;
#pragma omp simd reduction(+ : ddt, du)
        for (int64_t n = 0; n < N; ++n) {
          const float gl = gh[n] + Cl[n] * dy_l;
          dCl[n] += dy_l * h[n];
          const float decay = gl * h_prev[n] * a[n];  // d/d(dt*A) of the carried state
          ddt += decay * A[n] + gl * Bl[n] * u_l;
          dA[n] += decay * dt;
          dBl[n] += gl * dt * u_l;
          du += gl * dt * Bl[n];
          gh[n] = gl * a[n];
        }
      } else {
#pragma omp simd reduction(+ : ddt, du)
        for (int64_t n = 0; n < N; ++n) {
          const float gl = gh[n] + Cl[n] * dy_l;
          dCl[n] += dy_l * h[n];
          ddt += gl * Bl[n] * u_l;
          dBl[n] += gl * dt * u_l;
          du += gl * dt * Bl[n];
        }
      }
      const float raw = delta[l] + bias;
      const float ddelta = p.delta_softplus ? ddt * sigmoid(raw) : ddt;
      p.du[row + l] = du;
      p.ddelta[row + l] = ddelta;
      dD += dy_l * u_l;
      dbias += ddelta;
    }
    std::memcpy(p.dA_rows + (b * p.channels + c) * N, dA, N * sizeof(float));
    p.dD_rows[b * p.channels + c] = dD;
    p.dbias_rows[b * p.channels + c] = dbias;
  }
  transpose_out(dBt, p.dB + bc, N, L);
  transpose_out(dCt, p.dC + bc, N, L);
}

int run_backward(const BackwardProblem& p) {
  const int64_t tasks = p.batch * p.routes;
  int status = VMDDPM_OK;
#pragma omp parallel
  {
    TaskScratch scratch(p.length, p.state);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      backward_task(p, scratch, task / p.routes, task % p.routes);
    }
  }
  return status;
}

}  // namespace
}  // namespace vmddpm::cpu

extern "C" int vmddpm_selective_scan_bwd_cpu(
    const float* u, const float* delta, const float* A, const float* B, const float* C,
    const float* D, const float* delta_bias, const float* dy, float* du, float* ddelta, float* dA,
    float* dB, float* dC, float* dD, float* ddelta_bias, int64_t batch, int64_t channels,
    int64_t routes, int64_t state, int64_t length, int delta_softplus) {
  const char* op = "selective_scan_bwd_cpu";
  return vmddpm::guard_abi_call(op, [&] {
    // The forward's checks cover the inputs (as fp32); then the gradient buffers.
    float sink = 0.0f;
    const vmddpm::SelectiveScanProblem forward{
        u,     delta,    A,      B,     C,      D,     delta_bias, dy != nullptr ? &sink : nullptr,
        batch, channels, routes, state, length, VMDDPM_DTYPE_FLOAT32, delta_softplus != 0};
    int status = vmddpm::validate_selective_scan(op, forward);
    if (status != VMDDPM_OK) return status;
    const void* gradients[] = {dy, du, ddelta, dA, dB, dC, dD, ddelta_bias};
    const char* names[] = {"dy", "du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias"};
    for (int i = 0; i < 8; ++i) {
      if (gradients[i] == nullptr) {
        return vmddpm::fail(VMDDPM_ERROR_INVALID_ARGUMENT, "%s: %s is a null pointer", op, names[i]);
      }
    }
    if (batch == 0 || length == 0 || channels == 0) return static_cast<int>(VMDDPM_OK);
    std::vector<float> dA_rows(batch * channels * state), dD_rows(batch * channels),
        dbias_rows(batch * channels);
    const vmddpm::cpu::BackwardProblem problem{
        u,  delta, A,  B,  C,  D,  delta_bias, dy, du, ddelta, dB, dC, dA_rows.data(),
        dD_rows.data(), dbias_rows.data(), batch, channels, routes, state, length,
        delta_softplus != 0};
    status = vmddpm::cpu::run_backward(problem);
    if (status != VMDDPM_OK) return status;
    // Sum the per-row partials over the batch, in row order (deterministic).
    for (int64_t i = 0; i < channels * state; ++i) {
      float total = 0.0f;
      for (int64_t b = 0; b < batch; ++b) total += dA_rows[b * channels * state + i];
      dA[i] = total;
    }
    for (int64_t c = 0; c < channels; ++c) {
      float d_total = 0.0f, bias_total = 0.0f;
      for (int64_t b = 0; b < batch; ++b) {
        d_total += dD_rows[b * channels + c];
        bias_total += dbias_rows[b * channels + c];
      }
      dD[c] = d_total;
      ddelta_bias[c] = bias_total;
    }
    return static_cast<int>(VMDDPM_OK);
  });
}

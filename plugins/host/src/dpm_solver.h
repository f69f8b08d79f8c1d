// DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) as vmddpm_deploy/diffusion/dpm_solver.py computes it,
// so that the host and the Python sampler produce the same images from the same eps. With
// alpha_t = sqrt(a_t), sigma_t = sqrt(1 - a_t), lambda_t = log(alpha_t / sigma_t) and step k from
// s = timesteps[k] to t = timesteps[k + 1]:
//
//   x0_k = (x_s - sigma_s eps) / alpha_s, clipped to [-1, 1]        h_k = lambda_t - lambda_s
//   k = 0:   x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h_k) - 1) x0_k                 (DDIM)
//   k >= 1:  D_k = (1 + 1 / (2 r_k)) x0_k - 1 / (2 r_k) x0_{k-1},  r_k = h_{k-1} / h_k
//            x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h_k) - 1) D_k
//   last:    x_0 = x0_k (to sigma = 0, first order, diffusers' lower_order_final)
//
// Coefficients in float64 in Python's order, rounded to float32 once; per element float32 in
// PyTorch's order (fused multiply-adds where ATen's add(x, y, alpha) fuses them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sampler.h"

namespace vmddpm::host {

class DPMSolverPP2MSampler : public Sampler {
 public:
  DPMSolverPP2MSampler(const std::vector<double>& alphas_cumprod, std::vector<int64_t> timesteps,
                       bool clip_sample = true);

  const std::vector<int64_t>& timesteps() const override { return timesteps_; }
  bool needs_noise(size_t) const override { return false; }
  // `history` carries the previous step's x0 (clipped).
  void step(size_t k, float* x, const float* eps, const float* noise, int64_t count,
            StepHistory& history) const override;

 private:
  struct Coefficients {
    double eps_scale;          // sigma_s
    double inv_alpha;          // 1 / alpha_s
    double x_coeff;            // sigma_t / sigma_s
    double first_order_coeff;  // -alpha_t (exp(-h) - 1)
    double x0_coeff;           // -alpha_t (exp(-h) - 1) (1 + 1 / (2 r))
    double previous_x0_coeff;  // alpha_t (exp(-h) - 1) / (2 r)
    bool to_clean;
  };
  std::vector<int64_t> timesteps_;
  std::vector<Coefficients> coefficients_;
  bool clip_sample_;
};

}  // namespace vmddpm::host

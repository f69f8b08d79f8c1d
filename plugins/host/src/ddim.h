// DDIM (Song, Meng & Ermon 2021) as vmddpm_deploy/diffusion/ddim.py computes it, so that the
// host and the Python sampler produce the same images from the same eps:
//
//   x0_hat  = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), clipped to [-1, 1]          (Song eq. 9)
//   sigma_t = eta sqrt((1 - a_t') / (1 - a_t)) sqrt(1 - a_t / a_t')              (Song eq. 16)
//   x_t'    = sqrt(a_t') x0_hat + sqrt(1 - a_t' - sigma_t^2) eps + sigma_t z      (Song eq. 12)
//
// with a = alpha_bar, t' the next listed timestep and a_t' = 1 after the last step.
//
// Multistep DDIM (vmddpm_deploy/diffusion/ddim_multistep.py, order 2 or 3, eta 0) drives the same
// update with an Adams-Bashforth combination of the last q = min(order, k + 1) eps, e_k newest:
//
//   q = 2:  e'_k = (3 e_k - e_{k-1}) / 2,   q = 3:  e'_k = (23 e_k - 16 e_{k-1} + 5 e_{k-2}) / 12
//
// (Liu et al. 2022, PLMS, eq. 12), x0 clipped from e'_k and e'_k in the direction term.
// Coefficients are computed in float64 in Python's order and rounded to float32 once; the
// per-element arithmetic is float32 in PyTorch's order (fused multiply-adds where ATen's
// add(x, y, alpha) fuses them).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "sampler.h"

namespace vmddpm::host {

// `steps` training timesteps, descending, exactly as vmddpm_deploy.diffusion.spaced_timesteps:
// spacing "leading", "trailing" or "linspace". Throws HostError(kInvalidArgument) otherwise.
std::vector<int64_t> spaced_timesteps(int64_t num_train_timesteps, int64_t steps, const std::string& spacing);

// `steps` distinct timesteps placed by noise level, as vmddpm_deploy.diffusion.schedule.noise_level_timesteps:
// "quadratic" (floor(4 T i^2 / (5 (S-1)^2))), "logsnr" (even log sigma), "karras" (rho 7), each
// continuous level mapped to the nearest timestep by interpolating log sigma. Refuses a step count
// that repeats a timestep, naming the largest that does not.
std::vector<int64_t> noise_level_timesteps(const std::vector<double>& alphas_cumprod, int64_t steps,
                                           const std::string& spacing);

// Any of the six spacings: what DDIMSampler runs (vmddpm_deploy.diffusion.schedule.inference_timesteps).
std::vector<int64_t> inference_timesteps(const std::vector<double>& alphas_cumprod, int64_t steps,
                                         const std::string& spacing);

// The `steps` timesteps diffusers' DPMSolverMultistepScheduler picks (steps + 1 grid points with
// the final 0 dropped for linspace / leading / trailing; DDIM's list for the noise-level
// spacings), as vmddpm_deploy.diffusion.dpm_solver.dpm_solver_timesteps, refusing repeats.
std::vector<int64_t> dpm_solver_timesteps(const std::vector<double>& alphas_cumprod, int64_t steps,
                                          const std::string& spacing);

// schedule.py's predict_x0 for one element: torch.add(x, eps, alpha=-sqrt(1 - a_t)).mul_(1 / sqrt(a_t)),
// clamped to [-1, 1] when `clip`. ATen's vectorised add computes x + alpha * eps as one fused
// multiply-add. DDIM, multistep DDIM and DPM-Solver++ all predict x0 this way.
inline float predict_x0(float x, float eps, float minus_eps_scale, float inv_sqrt_alpha_bar, bool clip) {
  const float x0 = std::fma(eps, minus_eps_scale, x) * inv_sqrt_alpha_bar;
  return clip ? std::min(std::max(x0, -1.0f), 1.0f) : x0;
}

// Throws HostError(kInvalidArgument) unless `timesteps` are distinct, descending, in [0, T - 1] and
// at least one, as vmddpm_deploy.diffusion.schedule.check_timesteps.
void check_timesteps(int64_t num_train_timesteps, const std::vector<int64_t>& timesteps);

class DDIMSampler : public Sampler {
 public:
  // At `timesteps` (checked: inference_timesteps' or a manifest's, from `vmddpm-deploy export
  // --timesteps`). order 1 is DDIM; 2 and 3 are multistep DDIM, deterministic (eta must be 0).
  DDIMSampler(const std::vector<double>& alphas_cumprod, std::vector<int64_t> timesteps, double eta,
              int64_t order = 1, bool clip_sample = true);

  const std::vector<int64_t>& timesteps() const override { return timesteps_; }
  bool needs_noise(size_t k) const override { return coefficients_[k].sigma > 0.0; }
  // `history` carries the eps of the earlier steps that the Adams-Bashforth combination uses.
  void step(size_t k, float* x, const float* eps, const float* noise, int64_t count,
            StepHistory& history) const override;

 private:
  struct Coefficients {
    double eps_scale;           // sqrt(1 - a_t)
    double inv_sqrt_alpha_bar;  // 1 / sqrt(a_t)
    double x0_coeff;            // sqrt(a_t')
    double eps_coeff;           // sqrt(1 - a_t' - sigma^2)
    double sigma;
  };
  std::vector<int64_t> timesteps_;
  std::vector<Coefficients> coefficients_;
  int64_t order_;
  bool clip_sample_;
};

}  // namespace vmddpm::host

// DDIM (Song, Meng & Ermon 2021) as vmddpm_deploy/diffusion/ddim.py computes it, so that the
// host and the Python sampler produce the same images from the same eps:
//
//   x0_hat  = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), clipped to [-1, 1]          (Song eq. 9)
//   sigma_t = eta sqrt((1 - a_t') / (1 - a_t)) sqrt(1 - a_t / a_t')              (Song eq. 16)
//   x_t'    = sqrt(a_t') x0_hat + sqrt(1 - a_t' - sigma_t^2) eps + sigma_t z      (Song eq. 12)
//
// with a = alpha_bar, t' the next listed timestep and a_t' = 1 after the last step.
// Coefficients are computed in float64 in Python's order and rounded to float32 once; the
// per-element arithmetic is float32 in PyTorch's order (fused multiply-adds where ATen's
// add(x, y, alpha) fuses them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

// Throws HostError(kInvalidArgument) unless `timesteps` are distinct, descending, in [0, T - 1] and
// at least one, as vmddpm_deploy.diffusion.schedule.check_timesteps.
void check_timesteps(int64_t num_train_timesteps, const std::vector<int64_t>& timesteps);

class DDIMSampler {
 public:
  DDIMSampler(const std::vector<double>& alphas_cumprod, int64_t steps, double eta, const std::string& spacing,
              bool clip_sample = true);
  // At explicit timesteps (a manifest's, from `vmddpm-deploy export --timesteps`), checked.
  DDIMSampler(const std::vector<double>& alphas_cumprod, std::vector<int64_t> timesteps, double eta,
              bool clip_sample = true);

  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  bool needs_noise(size_t k) const { return coefficients_[k].sigma > 0.0; }

  // x <- x_{t'} in place from eps at step k; noise (like x) is read only when needs_noise(k).
  void step(size_t k, float* x, const float* eps, const float* noise, int64_t count) const;

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
  bool clip_sample_;
};

}  // namespace vmddpm::host

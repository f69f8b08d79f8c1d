#include "ddim.h"

#include <algorithm>
#include <cmath>

#include "host_error.h"

namespace vmddpm::host {
namespace {

// numpy's round(): half to even, what std::nearbyint does in the default rounding mode.
int64_t round_half_even(double value) { return static_cast<int64_t>(std::nearbyint(value)); }

}  // namespace

std::vector<int64_t> spaced_timesteps(int64_t num_train_timesteps, int64_t steps, const std::string& spacing) {
  const int64_t T = num_train_timesteps;
  if (steps < 1 || steps > T) {
    throw HostError(ExitCode::kInvalidArgument, "--steps must be in [1, " + std::to_string(T) + "], got " +
                                                    std::to_string(steps));
  }
  std::vector<int64_t> timesteps(static_cast<size_t>(steps));
  if (spacing == "leading") {
    // np.arange(steps)[::-1] * (T // steps)
    for (int64_t k = 0; k < steps; ++k) timesteps[k] = (steps - 1 - k) * (T / steps);
  } else if (spacing == "trailing") {
    // np.round(np.arange(T, 0, -T / steps))[:steps] - 1. numpy fills a float arange as
    // start + i * delta with delta = (start + step) - start, which can differ from step.
    const double start = static_cast<double>(T);
    const double delta = (start + (-start / static_cast<double>(steps))) - start;
    for (int64_t k = 0; k < steps; ++k) timesteps[k] = round_half_even(start + static_cast<double>(k) * delta) - 1;
  } else if (spacing == "linspace") {
    // np.linspace(0, T - 1, steps).round()[::-1]: i * ((T - 1) / (steps - 1)), last = T - 1.
    const double stop = static_cast<double>(T - 1);
    for (int64_t i = 0; i < steps; ++i) {
      double value = 0.0;
      if (steps > 1) value = (i == steps - 1) ? stop : static_cast<double>(i) * (stop / static_cast<double>(steps - 1));
      timesteps[steps - 1 - i] = round_half_even(value);
    }
  } else {
    throw HostError(ExitCode::kInvalidArgument,
                    "unknown --spacing \"" + spacing + "\"; choose one of leading, trailing, linspace");
  }
  return timesteps;
}

DDIMSampler::DDIMSampler(const std::vector<double>& alphas_cumprod, int64_t steps, double eta,
                         const std::string& spacing, bool clip_sample)
    : timesteps_(spaced_timesteps(static_cast<int64_t>(alphas_cumprod.size()), steps, spacing)),
      clip_sample_(clip_sample) {
  if (!(eta >= 0.0 && eta <= 1.0)) {
    throw HostError(ExitCode::kInvalidArgument, "--eta must be in [0, 1], got " + std::to_string(eta));
  }
  for (size_t k = 0; k < timesteps_.size(); ++k) {
    const double ab_t = alphas_cumprod[static_cast<size_t>(timesteps_[k])];
    const double ab_prev = k + 1 < timesteps_.size() ? alphas_cumprod[static_cast<size_t>(timesteps_[k + 1])] : 1.0;
    const double variance = (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev);
    const double sigma = eta * std::sqrt(variance);
    coefficients_.push_back({std::sqrt(1.0 - ab_t), 1.0 / std::sqrt(ab_t), std::sqrt(ab_prev),
                             std::sqrt(std::max(0.0, 1.0 - ab_prev - sigma * sigma)), sigma});
  }
}

void DDIMSampler::step(size_t k, float* x, const float* eps, const float* noise, int64_t count) const {
  const Coefficients& c = coefficients_[k];
  // PyTorch casts each Python-float coefficient to the tensor's float32 before the kernel runs.
  const float minus_eps_scale = static_cast<float>(-c.eps_scale);
  const float inv_sqrt_alpha_bar = static_cast<float>(c.inv_sqrt_alpha_bar);
  const float x0_coeff = static_cast<float>(c.x0_coeff);
  const float eps_coeff = static_cast<float>(c.eps_coeff);
  const float sigma = static_cast<float>(c.sigma);
  const bool add_noise = c.sigma > 0.0;
  for (int64_t i = 0; i < count; ++i) {
    // torch.add(x, eps, alpha=-eps_scale).mul_(inv_sqrt_alpha_bar): ATen's vectorised add
    // computes x + alpha * eps as one fused multiply-add.
    float x0 = std::fma(eps[i], minus_eps_scale, x[i]) * inv_sqrt_alpha_bar;
    if (clip_sample_) x0 = std::min(std::max(x0, -1.0f), 1.0f);
    float next = std::fma(eps[i], eps_coeff, x0 * x0_coeff);  // x0.mul_(x0_coeff).add_(eps, alpha=eps_coeff)
    if (add_noise) next = std::fma(noise[i], sigma, next);     // .add_(noise, alpha=sigma)
    x[i] = next;
  }
}

}  // namespace vmddpm::host

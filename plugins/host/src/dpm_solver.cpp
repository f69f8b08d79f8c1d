#include "dpm_solver.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "ddim.h"
#include "host_error.h"

namespace vmddpm::host {
DPMSolverPP2MSampler::DPMSolverPP2MSampler(const std::vector<double>& alphas_cumprod, std::vector<int64_t> timesteps,
                                           bool clip_sample)
    : timesteps_(std::move(timesteps)), clip_sample_(clip_sample) {
  check_timesteps(static_cast<int64_t>(alphas_cumprod.size()), timesteps_);
  double previous_h = std::nan("");  // r_0 is never used: step 0 is first order
  for (size_t k = 0; k < timesteps_.size(); ++k) {
    const double ab_s = alphas_cumprod[static_cast<size_t>(timesteps_[k])];
    const double alpha_s = std::sqrt(ab_s), sigma_s = std::sqrt(1.0 - ab_s);
    if (k + 1 == timesteps_.size()) {
      coefficients_.push_back({sigma_s, 1.0 / alpha_s, 0.0, 1.0, 1.0, 0.0, true});
      break;
    }
    const double ab_t = alphas_cumprod[static_cast<size_t>(timesteps_[k + 1])];
    const double alpha_t = std::sqrt(ab_t), sigma_t = std::sqrt(1.0 - ab_t);
    const double h = std::log(alpha_t / sigma_t) - std::log(alpha_s / sigma_s);
    const double first_order = -alpha_t * std::expm1(-h);  // expm1: exp(-h) - 1 without cancellation
    const double half_inv_r = 0.5 * h / previous_h;         // 1 / (2 r_k)
    coefficients_.push_back({sigma_s, 1.0 / alpha_s, sigma_t / sigma_s, first_order, first_order * (1.0 + half_inv_r),
                             -first_order * half_inv_r, false});
    previous_h = h;
  }
}

void DPMSolverPP2MSampler::step(size_t k, float* x, const float* eps, const float*, int64_t count,
                                StepHistory& history) const {
  const Coefficients& c = coefficients_[k];
  // PyTorch casts each Python-float coefficient to the tensor's float32 before the kernel runs.
  const float minus_eps_scale = static_cast<float>(-c.eps_scale);
  const float inv_alpha = static_cast<float>(c.inv_alpha);
  std::vector<float> x0(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) x0[i] = predict_x0(x[i], eps[i], minus_eps_scale, inv_alpha, clip_sample_);
  if (c.to_clean) {
    std::copy(x0.begin(), x0.end(), x);
  } else if (k == 0) {
    const float x_coeff = static_cast<float>(c.x_coeff), first = static_cast<float>(c.first_order_coeff);
    for (int64_t i = 0; i < count; ++i) x[i] = std::fma(x0[i], first, x[i] * x_coeff);  // mul, .add_(x0, alpha)
  } else {
    const float x_coeff = static_cast<float>(c.x_coeff), x0_coeff = static_cast<float>(c.x0_coeff);
    const float previous_coeff = static_cast<float>(c.previous_x0_coeff);
    const float* previous = history.back().data();
    for (int64_t i = 0; i < count; ++i) {
      // torch.mul(x, x_coeff).add_(x0, alpha=x0_coeff).add_(previous x0, alpha=previous_coeff)
      x[i] = std::fma(previous[i], previous_coeff, std::fma(x0[i], x0_coeff, x[i] * x_coeff));
    }
  }
  history.assign(1, std::move(x0));
}

}  // namespace vmddpm::host

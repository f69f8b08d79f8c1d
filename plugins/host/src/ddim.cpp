#include "ddim.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "host_error.h"

namespace vmddpm::host {
namespace {

// numpy's round(): half to even, what std::nearbyint does in the default rounding mode.
int64_t round_half_even(double value) { return static_cast<int64_t>(std::nearbyint(value)); }

void check_step_count(int64_t T, int64_t steps) {
  if (steps < 1 || steps > T) {
    throw HostError(ExitCode::kInvalidArgument, "--steps must be in [1, " + std::to_string(T) + "], got " +
                                                    std::to_string(steps));
  }
}

}  // namespace

std::vector<int64_t> spaced_timesteps(int64_t num_train_timesteps, int64_t steps, const std::string& spacing) {
  const int64_t T = num_train_timesteps;
  check_step_count(T, steps);
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
    throw HostError(ExitCode::kInvalidArgument, "unknown --spacing \"" + spacing +
                                                    "\"; choose one of leading, trailing, linspace, quadratic, "
                                                    "logsnr, karras");
  }
  return timesteps;
}

namespace {

constexpr double kKarrasRho = 7.0;

bool is_noise_level_spacing(const std::string& spacing) {
  return spacing == "quadratic" || spacing == "logsnr" || spacing == "karras";
}

// schedule.py's _noise_level_candidates, operation for operation (no contraction: -ffp-contract=off).
std::vector<int64_t> noise_level_candidates(const std::vector<double>& alphas_cumprod, int64_t steps,
                                            const std::string& spacing) {
  const int64_t T = static_cast<int64_t>(alphas_cumprod.size());
  std::vector<int64_t> timesteps(static_cast<size_t>(steps));
  if (spacing == "quadratic") {
    const int64_t denominator = std::max<int64_t>(5 * (steps - 1) * (steps - 1), 1);
    for (int64_t k = 0; k < steps; ++k) {
      const int64_t i = steps - 1 - k;
      timesteps[k] = 4 * T * i * i / denominator;
    }
    return timesteps;
  }
  std::vector<double> sigma(alphas_cumprod.size()), log_sigma(alphas_cumprod.size());
  for (size_t t = 0; t < alphas_cumprod.size(); ++t) {
    sigma[t] = std::sqrt((1.0 - alphas_cumprod[t]) / alphas_cumprod[t]);
    log_sigma[t] = std::log(sigma[t]);
  }
  const double high = std::pow(sigma.back(), 1.0 / kKarrasRho);
  const double low = std::pow(sigma.front(), 1.0 / kKarrasRho);
  for (int64_t i = 0; i < steps; ++i) {
    // np.linspace(0, 1, steps): i * (1 / (steps - 1)), the last exactly 1.
    double ramp = 0.0;
    if (steps > 1) ramp = (i == steps - 1) ? 1.0 : static_cast<double>(i) * (1.0 / static_cast<double>(steps - 1));
    double target;
    if (spacing == "logsnr") {
      target = log_sigma.back() + ramp * (log_sigma.front() - log_sigma.back());
    } else {
      target = std::log(std::pow(high + ramp * (low - high), kKarrasRho));
    }
    if (T == 1) {
      timesteps[i] = 0;
      continue;
    }
    // searchsorted(log_sigma, target, side="right") - 1, clamped to [0, T-2]
    int64_t below = static_cast<int64_t>(std::upper_bound(log_sigma.begin(), log_sigma.end(), target) -
                                         log_sigma.begin()) - 1;
    below = std::min(std::max<int64_t>(below, 0), T - 2);
    double fraction = (target - log_sigma[below]) / (log_sigma[below + 1] - log_sigma[below]);
    fraction = std::min(std::max(fraction, 0.0), 1.0);
    timesteps[i] = round_half_even(static_cast<double>(below) + fraction);
  }
  return timesteps;
}

bool strictly_descending(const std::vector<int64_t>& timesteps) {
  for (size_t k = 1; k < timesteps.size(); ++k) {
    if (timesteps[k] >= timesteps[k - 1]) return false;
  }
  return true;
}

// The largest step count below `steps` (1 at least) whose candidates(count) repeat no timestep.
template <typename Candidates>
int64_t most_distinct_steps(int64_t steps, const Candidates& candidates) {
  int64_t most = steps - 1;
  while (most > 1 && !strictly_descending(candidates(most))) --most;
  return most;
}

// DPM-Solver++'s grid candidates (vmddpm_deploy.diffusion.dpm_solver._candidate_timesteps).
std::vector<int64_t> grid_candidates(int64_t T, int64_t steps, const std::string& spacing) {
  if (spacing == "trailing") return spaced_timesteps(T, steps, spacing);
  std::vector<int64_t> timesteps(static_cast<size_t>(steps));
  if (spacing == "linspace") {
    // np.linspace(0, T - 1, steps + 1).round()[::-1][:-1]: i * ((T - 1) / steps), the last
    // (i = steps) exactly T - 1; reversed, the trailing i = 0 dropped.
    const double stop = static_cast<double>(T - 1);
    for (int64_t k = 0; k < steps; ++k) {
      const int64_t i = steps - k;
      timesteps[k] = i == steps ? T - 1 : round_half_even(static_cast<double>(i) * (stop / static_cast<double>(steps)));
    }
  } else if (spacing == "leading") {
    // np.arange(1, steps + 1)[::-1] * (T // (steps + 1))
    for (int64_t k = 0; k < steps; ++k) timesteps[k] = (steps - k) * (T / (steps + 1));
  } else {
    throw HostError(ExitCode::kInvalidArgument, "unknown --spacing " + spacing +
                                                    "; choose leading, trailing, linspace, quadratic, logsnr or karras");
  }
  return timesteps;
}

}  // namespace

std::vector<int64_t> noise_level_timesteps(const std::vector<double>& alphas_cumprod, int64_t steps,
                                           const std::string& spacing) {
  check_step_count(static_cast<int64_t>(alphas_cumprod.size()), steps);
  if (!is_noise_level_spacing(spacing)) {
    throw HostError(ExitCode::kInvalidArgument,
                    "unknown --spacing \"" + spacing + "\"; choose one of quadratic, logsnr, karras");
  }
  std::vector<int64_t> timesteps = noise_level_candidates(alphas_cumprod, steps, spacing);
  if (!strictly_descending(timesteps)) {
    const int64_t most = most_distinct_steps(
        steps, [&](int64_t count) { return noise_level_candidates(alphas_cumprod, count, spacing); });
    throw HostError(ExitCode::kInvalidArgument, spacing + " spacing repeats timesteps at " + std::to_string(steps) +
                                                    " steps; use at most " + std::to_string(most) + ", or another spacing");
  }
  return timesteps;
}

std::vector<int64_t> inference_timesteps(const std::vector<double>& alphas_cumprod, int64_t steps,
                                         const std::string& spacing) {
  if (is_noise_level_spacing(spacing)) return noise_level_timesteps(alphas_cumprod, steps, spacing);
  return spaced_timesteps(static_cast<int64_t>(alphas_cumprod.size()), steps, spacing);
}

std::vector<int64_t> dpm_solver_timesteps(const std::vector<double>& alphas_cumprod, int64_t steps,
                                          const std::string& spacing) {
  if (is_noise_level_spacing(spacing)) return noise_level_timesteps(alphas_cumprod, steps, spacing);
  const int64_t T = static_cast<int64_t>(alphas_cumprod.size());
  check_step_count(T, steps);
  std::vector<int64_t> timesteps = grid_candidates(T, steps, spacing);
  if (!strictly_descending(timesteps)) {
    // A repeated timestep is a zero log-SNR step h, which r = h_{k-1} / h_k would divide by.
    const int64_t most = most_distinct_steps(steps, [&](int64_t count) { return grid_candidates(T, count, spacing); });
    throw HostError(ExitCode::kInvalidArgument, "dpm-solver++ with " + spacing + " spacing repeats timesteps at " +
                                                    std::to_string(steps) + " steps; use at most " +
                                                    std::to_string(most));
  }
  return timesteps;
}

void check_timesteps(int64_t num_train_timesteps, const std::vector<int64_t>& timesteps) {
  if (timesteps.empty()) throw HostError(ExitCode::kInvalidArgument, "timesteps must list at least one timestep");
  for (size_t k = 0; k < timesteps.size(); ++k) {
    if (timesteps[k] < 0 || timesteps[k] >= num_train_timesteps) {
      throw HostError(ExitCode::kInvalidArgument, "timesteps must lie in [0, " + std::to_string(num_train_timesteps - 1) +
                                                      "], got " + std::to_string(timesteps[k]));
    }
    if (k > 0 && timesteps[k] >= timesteps[k - 1]) {
      throw HostError(ExitCode::kInvalidArgument, "timesteps must be distinct and descending");
    }
  }
}

DDIMSampler::DDIMSampler(const std::vector<double>& alphas_cumprod, std::vector<int64_t> timesteps, double eta,
                         int64_t order, bool clip_sample)
    : timesteps_(std::move(timesteps)), order_(order), clip_sample_(clip_sample) {
  check_timesteps(static_cast<int64_t>(alphas_cumprod.size()), timesteps_);
  if (!(eta >= 0.0 && eta <= 1.0)) {
    throw HostError(ExitCode::kInvalidArgument, "--eta must be in [0, 1], got " + std::to_string(eta));
  }
  if (order < 1 || order > 3) {
    throw HostError(ExitCode::kInvalidArgument, "multistep DDIM order must be 2 or 3, got " + std::to_string(order));
  }
  if (order > 1 && eta != 0.0) {
    throw HostError(ExitCode::kInvalidArgument, "--eta applies to ddim only; multistep DDIM is deterministic");
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

void DDIMSampler::step(size_t k, float* x, const float* eps_k, const float* noise, int64_t count,
                       StepHistory& history) const {
  // Adams-Bashforth weights on (e_k, e_{k-1}, e_{k-2}) by order, cast to float32 as PyTorch casts
  // a Python-float multiplier or alpha.
  static const double kWeights[3][3] = {{1.0, 0.0, 0.0}, {3.0 / 2.0, -1.0 / 2.0, 0.0},
                                        {23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0}};
  const size_t q = std::min(static_cast<size_t>(order_), history.size() + 1);
  std::vector<float> combined;
  const float* eps = eps_k;
  if (q > 1) {
    // torch.mul(eps, w0), then .add_(older, alpha=w) newest first: a fused multiply-add each.
    combined.resize(static_cast<size_t>(count));
    const float w0 = static_cast<float>(kWeights[q - 1][0]);
    for (int64_t i = 0; i < count; ++i) combined[i] = eps_k[i] * w0;
    for (size_t j = 1; j < q; ++j) {
      const float w = static_cast<float>(kWeights[q - 1][j]);
      const float* older = history[history.size() - j].data();
      for (int64_t i = 0; i < count; ++i) combined[i] = std::fma(older[i], w, combined[i]);
    }
    eps = combined.data();
  }
  if (order_ > 1) {
    history.emplace_back(eps_k, eps_k + count);
    if (history.size() > static_cast<size_t>(order_ - 1)) history.erase(history.begin());
  }
  const Coefficients& c = coefficients_[k];
  // PyTorch casts each Python-float coefficient to the tensor's float32 before the kernel runs.
  const float minus_eps_scale = static_cast<float>(-c.eps_scale);
  const float inv_sqrt_alpha_bar = static_cast<float>(c.inv_sqrt_alpha_bar);
  const float x0_coeff = static_cast<float>(c.x0_coeff);
  const float eps_coeff = static_cast<float>(c.eps_coeff);
  const float sigma = static_cast<float>(c.sigma);
  const bool add_noise = c.sigma > 0.0;
  for (int64_t i = 0; i < count; ++i) {
    const float x0 = predict_x0(x[i], eps[i], minus_eps_scale, inv_sqrt_alpha_bar, clip_sample_);
    float next = std::fma(eps[i], eps_coeff, x0 * x0_coeff);  // x0.mul_(x0_coeff).add_(eps, alpha=eps_coeff)
    if (add_noise) next = std::fma(noise[i], sigma, next);     // .add_(noise, alpha=sigma)
    x[i] = next;
  }
}

}  // namespace vmddpm::host

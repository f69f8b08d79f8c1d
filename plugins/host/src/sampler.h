// A sampler as the host's loop (sampling_loop.h) runs it: its timesteps and its step rule, each
// computed as the Python sampler of the same name computes it (vmddpm_deploy/diffusion/), so the
// host and Python produce the same images from the same eps.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace vmddpm::host {

// What one run's earlier steps left for a multistep rule (the eps multistep DDIM combines, the x0
// DPM-Solver++ extrapolates from); empty before step 0.
using StepHistory = std::vector<std::vector<float>>;

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual const std::vector<int64_t>& timesteps() const = 0;
  virtual bool needs_noise(size_t k) const = 0;
  // x <- x_{t'} in place from eps at step k; noise (like x) is read only when needs_noise(k).
  virtual void step(size_t k, float* x, const float* eps, const float* noise, int64_t count,
                    StepHistory& history) const = 0;
};

// Where `name`'s timesteps sit when no --spacing is given, as vmddpm_deploy.choices.DEFAULT_SPACINGS.
std::string default_spacing(const std::string& name);

// The timesteps sampler `name` takes for `steps` and `spacing` (DPM-Solver++ places its own).
std::vector<int64_t> sampler_timesteps(const std::string& name, const std::vector<double>& alphas_cumprod,
                                       int64_t steps, const std::string& spacing);

// Sampler `name` at `timesteps`; eta is DDIM's and must be 0 for the others. Throws
// HostError(kInvalidArgument) for an unknown name or an argument out of range.
std::unique_ptr<Sampler> make_sampler(const std::string& name, const std::vector<double>& alphas_cumprod,
                                      std::vector<int64_t> timesteps, double eta);

}  // namespace vmddpm::host

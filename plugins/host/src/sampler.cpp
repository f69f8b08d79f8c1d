#include "sampler.h"

#include <utility>

#include "ddim.h"
#include "dpm_solver.h"
#include "host_error.h"

namespace vmddpm::host {
namespace {

// The samplers the host runs, as vmddpm_deploy.choices.HOST_SAMPLERS names them.
constexpr const char* kSamplerNames = "ddim, ddim-ab2, ddim-ab3 or dpm-solver++";

void check_name(const std::string& name) {
  if (name != "ddim" && name != "ddim-ab2" && name != "ddim-ab3" && name != "dpm-solver++") {
    throw HostError(ExitCode::kInvalidArgument,
                    "unknown --sampler " + name + "; choose " + std::string(kSamplerNames));
  }
}

}  // namespace

std::string default_spacing(const std::string& name) {
  check_name(name);
  return name == "dpm-solver++" ? "karras" : "leading";
}

std::vector<int64_t> sampler_timesteps(const std::string& name, const std::vector<double>& alphas_cumprod,
                                       int64_t steps, const std::string& spacing) {
  check_name(name);
  if (name == "dpm-solver++") return dpm_solver_timesteps(alphas_cumprod, steps, spacing);
  return inference_timesteps(alphas_cumprod, steps, spacing);
}

std::unique_ptr<Sampler> make_sampler(const std::string& name, const std::vector<double>& alphas_cumprod,
                                      std::vector<int64_t> timesteps, double eta) {
  check_name(name);
  if (name != "ddim" && eta != 0.0) {
    throw HostError(ExitCode::kInvalidArgument, "--eta applies to ddim only; " + name + " is deterministic");
  }
  if (name == "dpm-solver++") return std::make_unique<DPMSolverPP2MSampler>(alphas_cumprod, std::move(timesteps));
  const int64_t order = name == "ddim" ? 1 : name == "ddim-ab2" ? 2 : 3;
  return std::make_unique<DDIMSampler>(alphas_cumprod, std::move(timesteps), eta, order);
}

}  // namespace vmddpm::host

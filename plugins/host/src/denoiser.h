// What the sampling loop needs from a model: eps = Denoiser(x, t), the protocol of
// vmddpm_deploy.runtime.Denoiser, on host arrays. TensorRTDenoiser runs a plan; ReplayDenoiser
// plays back eps recorded from the Python sampler, which tests the loop without a GPU.
#pragma once

#include <cstdint>

namespace vmddpm::host {

class Denoiser {
 public:
  virtual ~Denoiser() = default;

  // x: (batch, C, H, W) float32, t: (batch,) training timesteps -> eps: (batch, C, H, W) float32.
  virtual void denoise(const float* x, const int64_t* t, int64_t batch, float* eps) = 0;

  // The largest batch one call accepts.
  virtual int64_t max_batch() const = 0;
};

}  // namespace vmddpm::host

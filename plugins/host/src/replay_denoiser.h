// A Denoiser that returns eps recorded from the Python sampler, call by call.
//
// Recording format (little-endian; written by write_recording in tests/host/artifacts.py):
//   8 bytes   magic "VMDEPS01"
//   4 x u32   channels, height, width, number of calls
//   per call: u32 batch; batch x i64 t; batch*C*H*W x f32 x (the input the sampler passed);
//             batch*C*H*W x f32 eps (what the model returned)
//
// Each call checks that the host asks for the same batch size and timesteps, and measures how
// far the host's x is from the recorded x: the loop's drift, reported by max_x_error().
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "denoiser.h"

namespace vmddpm::host {

class ReplayDenoiser final : public Denoiser {
 public:
  ReplayDenoiser(const std::filesystem::path& path, int64_t channels, int64_t height, int64_t width);

  void denoise(const float* x, const int64_t* t, int64_t batch, float* eps) override;
  int64_t max_batch() const override { return max_batch_; }

  double max_x_error() const { return max_x_error_; }
  size_t calls_replayed() const { return next_; }
  size_t calls_recorded() const { return calls_.size(); }

 private:
  struct Call {
    std::vector<int64_t> t;
    std::vector<float> x, eps;
  };
  std::filesystem::path path_;
  int64_t numel_;
  int64_t max_batch_ = 0;
  std::vector<Call> calls_;
  size_t next_ = 0;
  double max_x_error_ = 0.0;
};

}  // namespace vmddpm::host

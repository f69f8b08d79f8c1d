// The Denoiser that runs a TensorRT plan built by `vmddpm-deploy build-engine`.
//
// Compiled only when TensorRT's headers are given to CMake (VMDDPM_HOST_TENSORRT_INCLUDE_DIR);
// linked into vmddpm_host when libnvinfer is found too. The plugin library is loaded into the
// runtime's plugin registry before the plan is deserialised, as the plan's plugin layers need
// their creators to exist.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "denoiser.h"
#include "manifest.h"

namespace vmddpm::host {

class TensorRTDenoiser final : public Denoiser {
 public:
  // `engine` is the manifest entry of the plan; the plan and its plugin library are read from
  // the export directory (plugin_library overrides the latter when not empty). Throws
  // HostError(kBackendUnavailable) without a GPU or when TensorRT refuses the library or plan.
  TensorRTDenoiser(const Manifest& manifest, const EngineEntry& engine, const std::filesystem::path& plugin_library);
  ~TensorRTDenoiser() override;

  void denoise(const float* x, const int64_t* t, int64_t batch, float* eps) override;
  int64_t max_batch() const override;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace vmddpm::host

// The DDIM loop over a Denoiser, as vmddpm_deploy.generation.generate runs it: samples are taken
// in batches of `batch_size`, each cut into calls of `micro_batch` rows (a short one padded with
// copies of its last sample) that run through the whole sampler one after the other; sample i
// starts from gaussian_noise(seed, i, stream 0) and step k draws gaussian_noise(seed, i, stream
// k + 1) when the sampler adds noise, so sample i is the same image whichever samples share its
// batch.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "sampler.h"
#include "denoiser.h"

namespace vmddpm::host {

struct ImageShape {
  int64_t channels, height, width;
  int64_t numel() const { return channels * height * width; }
};

// Called once per finished batch: the sample indices and their x0, (batch, C, H, W) float32.
using BatchDone = std::function<void(const std::vector<uint64_t>& indices, const std::vector<float>& x0)>;

void generate(Denoiser& denoiser, const Sampler& sampler, uint64_t seed, const std::vector<uint64_t>& indices,
              const ImageShape& shape, int64_t batch_size, int64_t micro_batch, const BatchDone& on_batch);

}  // namespace vmddpm::host

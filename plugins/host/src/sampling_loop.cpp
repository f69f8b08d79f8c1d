#include "sampling_loop.h"

#include <algorithm>

#include "counter_rng.h"

namespace vmddpm::host {
namespace {

// Rows of `out` = the noise of each sample in `indices` for `stream`.
void batch_noise(uint64_t seed, const std::vector<uint64_t>& indices, uint64_t stream, int64_t numel, float* out) {
  for (size_t b = 0; b < indices.size(); ++b) gaussian_noise(seed, indices[b], stream, out + b * numel, numel);
}

}  // namespace

void generate(Denoiser& denoiser, const DDIMSampler& sampler, uint64_t seed, const std::vector<uint64_t>& indices,
              const ImageShape& shape, int64_t batch_size, const BatchDone& on_batch) {
  const int64_t numel = shape.numel();
  const auto& timesteps = sampler.timesteps();
  for (size_t start = 0; start < indices.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(indices.size(), start + static_cast<size_t>(batch_size));
    const std::vector<uint64_t> chunk(indices.begin() + static_cast<std::ptrdiff_t>(start),
                                      indices.begin() + static_cast<std::ptrdiff_t>(end));
    const int64_t batch = static_cast<int64_t>(chunk.size());
    const size_t elements = static_cast<size_t>(batch * numel);
    std::vector<float> x(elements), eps(elements), noise(elements);
    batch_noise(seed, chunk, 0, numel, x.data());
    std::vector<int64_t> t(static_cast<size_t>(batch));
    for (size_t k = 0; k < timesteps.size(); ++k) {
      std::fill(t.begin(), t.end(), timesteps[k]);
      denoiser.denoise(x.data(), t.data(), batch, eps.data());
      const bool noisy = sampler.needs_noise(k);
      if (noisy) batch_noise(seed, chunk, k + 1, numel, noise.data());
      sampler.step(k, x.data(), eps.data(), noisy ? noise.data() : nullptr, static_cast<int64_t>(elements));
    }
    on_batch(chunk, x);
  }
}

}  // namespace vmddpm::host

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
    // Every call has batch_size rows: a short batch is padded with copies of its last sample, so a
    // sample's image depends on the batch size alone, never on which samples share its batch.
    std::vector<uint64_t> rows = chunk;
    rows.resize(static_cast<size_t>(batch_size), chunk.back());
    const size_t elements = static_cast<size_t>(batch_size * numel);
    std::vector<float> x(elements), eps(elements), noise(elements);
    batch_noise(seed, rows, 0, numel, x.data());
    std::vector<int64_t> t(static_cast<size_t>(batch_size));
    for (size_t k = 0; k < timesteps.size(); ++k) {
      std::fill(t.begin(), t.end(), timesteps[k]);
      denoiser.denoise(x.data(), t.data(), batch_size, eps.data());
      const bool noisy = sampler.needs_noise(k);
      if (noisy) batch_noise(seed, rows, k + 1, numel, noise.data());
      sampler.step(k, x.data(), eps.data(), noisy ? noise.data() : nullptr, static_cast<int64_t>(elements));
    }
    x.resize(chunk.size() * static_cast<size_t>(numel));
    on_batch(chunk, x);
  }
}

}  // namespace vmddpm::host

#include "sampling_loop.h"

#include <algorithm>

#include "counter_rng.h"

namespace vmddpm::host {
namespace {

// Rows of `out` = the noise of each sample in `indices` for `stream`.
void batch_noise(uint64_t seed, const std::vector<uint64_t>& indices, uint64_t stream, int64_t numel, float* out) {
  for (size_t b = 0; b < indices.size(); ++b) gaussian_noise(seed, indices[b], stream, out + b * numel, numel);
}

// The final x of `rows` (their noise streams), run through every sampler step in one call each.
std::vector<float> sample_rows(Denoiser& denoiser, const Sampler& sampler, uint64_t seed,
                               const std::vector<uint64_t>& rows, int64_t numel) {
  const int64_t batch = static_cast<int64_t>(rows.size());
  const size_t elements = static_cast<size_t>(batch * numel);
  std::vector<float> x(elements), eps(elements), noise(elements);
  batch_noise(seed, rows, 0, numel, x.data());
  std::vector<int64_t> t(rows.size());
  const auto& timesteps = sampler.timesteps();
  StepHistory history;
  for (size_t k = 0; k < timesteps.size(); ++k) {
    std::fill(t.begin(), t.end(), timesteps[k]);
    denoiser.denoise(x.data(), t.data(), batch, eps.data());
    const bool noisy = sampler.needs_noise(k);
    if (noisy) batch_noise(seed, rows, k + 1, numel, noise.data());
    sampler.step(k, x.data(), eps.data(), noisy ? noise.data() : nullptr, static_cast<int64_t>(elements), history);
  }
  return x;
}

}  // namespace

void generate(Denoiser& denoiser, const Sampler& sampler, uint64_t seed, const std::vector<uint64_t>& indices,
              const ImageShape& shape, int64_t batch_size, int64_t micro_batch, const BatchDone& on_batch) {
  const int64_t numel = shape.numel();
  const size_t rows_per_call = static_cast<size_t>(micro_batch);
  for (size_t start = 0; start < indices.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(indices.size(), start + static_cast<size_t>(batch_size));
    const std::vector<uint64_t> chunk(indices.begin() + static_cast<std::ptrdiff_t>(start),
                                      indices.begin() + static_cast<std::ptrdiff_t>(end));
    std::vector<float> x0;
    x0.reserve(chunk.size() * static_cast<size_t>(numel));
    for (size_t part = 0; part < chunk.size(); part += rows_per_call) {
      // Every call has micro_batch rows: a short part is padded with copies of its last sample, so
      // a sample's image depends on the micro-batch alone, never on which samples share its call.
      const size_t used = std::min(rows_per_call, chunk.size() - part);
      std::vector<uint64_t> rows(chunk.begin() + static_cast<std::ptrdiff_t>(part),
                                 chunk.begin() + static_cast<std::ptrdiff_t>(part + used));
      rows.resize(rows_per_call, rows.back());
      const std::vector<float> x = sample_rows(denoiser, sampler, seed, rows, numel);
      x0.insert(x0.end(), x.begin(), x.begin() + static_cast<std::ptrdiff_t>(used * static_cast<size_t>(numel)));
    }
    on_batch(chunk, x0);
  }
}

}  // namespace vmddpm::host

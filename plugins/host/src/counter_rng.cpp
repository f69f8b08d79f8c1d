#include "counter_rng.h"

#include <cmath>

namespace vmddpm::host {

void gaussian_noise(uint64_t seed, uint64_t index, uint64_t stream, float* out, int64_t count) {
  const uint64_t key = splitmix64(splitmix64(splitmix64(seed) ^ index) ^ stream);
  constexpr double kTwoPowMinus53 = 1.0 / 9007199254740992.0;  // exact: a power of two
  constexpr double kTwoPi = 6.283185307179586;                  // the binary64 nearest to 2 pi
  for (int64_t j = 0; j < count; j += 2) {
    const uint64_t n = static_cast<uint64_t>(j);  // word counters 2p and 2p + 1 with p = j / 2
    const uint64_t b1 = splitmix64(key + n * kGolden);
    const uint64_t b2 = splitmix64(key + (n + 1) * kGolden);
    const double u1 = static_cast<double>((b1 >> 11) + 1) * kTwoPowMinus53;  // (0, 1]: log finite
    const double u2 = static_cast<double>(b2 >> 11) * kTwoPowMinus53;        // [0, 1)
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double theta = kTwoPi * u2;
    out[j] = static_cast<float>(radius * std::cos(theta));
    if (j + 1 < count) out[j + 1] = static_cast<float>(radius * std::sin(theta));
  }
}

}  // namespace vmddpm::host

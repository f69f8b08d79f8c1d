// Per-sample counter-based Gaussian noise, bit for bit the rule of
// vmddpm_deploy/diffusion/noise.py (read its docstring for the specification):
//
//   key     = splitmix64(splitmix64(splitmix64(seed) ^ index) ^ stream)
//   bits[n] = splitmix64(key + n * GOLDEN)
//   pair p  : u1 = ((bits[2p] >> 11) + 1) * 2^-53, u2 = (bits[2p+1] >> 11) * 2^-53
//             z0 = sqrt(-2 log u1) cos(2 pi u2), z1 = ... sin(...), each rounded to float32
//
// stream 0 is a sample's initial x_T; stream k + 1 is the noise sampler step k consumes.
#pragma once

#include <cstdint>

namespace vmddpm::host {

inline constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// One SplitMix64 output for state x (Steele, Lea & Flood; Vigna's splitmix64.c).
constexpr uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + kGolden;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Fill out[0 .. count) with the standard normal noise of sample `index`, stream `stream`:
// element j of the sample's row-major (C, H, W) array.
void gaussian_noise(uint64_t seed, uint64_t index, uint64_t stream, float* out, int64_t count);

}  // namespace vmddpm::host

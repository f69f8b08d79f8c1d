// fp16 / bf16 <-> fp32 conversions for the kernels' io edges, round-to-nearest-even like
// PyTorch's .to(). Written with integer bit operations so they need no F16C or AVX-512 BF16
// instructions and behave the same in every instruction-set build. Internal linkage: see
// selective_scan_kernel.h for why nothing here may be shared between those builds.
#pragma once

#include <cstdint>

namespace vmddpm::cpu {
namespace {

template <typename To, typename From>
inline To bit_cast_value(From value) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast_value needs equal sizes");
  To result;
  __builtin_memcpy(&result, &value, sizeof result);
  return result;
}

// Both directions compute every case and select at the end, without branches, so that the
// compiler vectorises loops over whole rows.
inline float half_bits_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  const uint32_t mantissa = half & 0x3ffu;
  // Normal: rebias the exponent from 15 to 127.
  const uint32_t normal = ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  // inf or NaN (exponent all ones), payload kept.
  const uint32_t special = 0x7f800000u | (mantissa << 13);
  // Zero or subnormal: mantissa * 2^-24, exact in fp32.
  const uint32_t subnormal =
      bit_cast_value<uint32_t>(static_cast<float>(mantissa) * 5.9604644775390625e-8f);
  const uint32_t magnitude = exponent == 0 ? subnormal : exponent == 0x1f ? special : normal;
  return bit_cast_value<float>(sign | magnitude);
}

inline uint16_t float_to_half_bits(float value) {
  const uint32_t bits = bit_cast_value<uint32_t>(value);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  // inf stays inf; NaN becomes a quiet NaN.
  const uint32_t special = magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u;
  // Below 2^-14 the half is subnormal with ulp 2^-24. Adding 0.5 (whose fp32 ulp is 2^-24)
  // lets the FPU round the value to that ulp, ties to even; the low bits are then the half.
  const uint32_t subnormal =
      bit_cast_value<uint32_t>(bit_cast_value<float>(magnitude) + 0.5f) - 0x3f000000u;
  // Normal: rebias the exponent and drop 13 mantissa bits, rounding half to even. A carry out
  // of the mantissa correctly bumps the exponent.
  const uint32_t normal =
      (magnitude + (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + ((magnitude >> 13) & 1u)) >>
      13;
  const uint32_t half = magnitude >= 0x7f800000u   ? special
                        : magnitude >= 0x477ff000u ? 0x7c00u  // >= 65520 rounds past 65504
                        : magnitude < 0x38800000u  ? subnormal
                                                   : normal;
  return static_cast<uint16_t>(sign | half);
}

inline float bfloat16_bits_to_float(uint16_t bf16) {
  return bit_cast_value<float>(static_cast<uint32_t>(bf16) << 16);
}

inline uint16_t float_to_bfloat16_bits(float value) {
  const uint32_t bits = bit_cast_value<uint32_t>(value);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;  // half to even
  const uint32_t quiet_nan = (bits >> 16) | 0x0040u;  // rounding could carry a NaN into inf
  return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

// How each io dtype is stored and widened: the kernels are templated on one of these.
struct Float32Io {
  using Storage = float;
  static float to_float(float value) { return value; }
  static float from_float(float value) { return value; }
};

struct Float16Io {
  using Storage = uint16_t;
  static float to_float(uint16_t value) { return half_bits_to_float(value); }
  static uint16_t from_float(float value) { return float_to_half_bits(value); }
};

struct BFloat16Io {
  using Storage = uint16_t;
  static float to_float(uint16_t value) { return bfloat16_bits_to_float(value); }
  static uint16_t from_float(float value) { return float_to_bfloat16_bits(value); }
};

}  // namespace
}  // namespace vmddpm::cpu

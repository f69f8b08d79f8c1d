// exp2 and softplus on GCC/Clang vector types of VMDDPM_SIMD_LANES floats, built from
// multiplies, adds, one division and bit operations only, so they vectorise in every
// instruction-set build (libm's scalar expf would be called once per lane). Accuracy over the
// ranges the selective scan meets: exp2 within 1.8e-7 relative, softplus within a few ulp
// (our own minimax fits, below).
// Casts between the two vector types reinterpret bits (GCC vector semantics), which is what
// the exponent tricks need. Internal linkage: see selective_scan_kernel.h.
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifndef VMDDPM_SIMD_LANES
#error "define VMDDPM_SIMD_LANES (floats per vector) before including vector_math.h"
#endif

namespace vmddpm::cpu {
namespace {

constexpr int kLanes = VMDDPM_SIMD_LANES;
typedef float vfloat __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline vfloat splat(float value) { return vfloat{} + value; }

inline vfloat load(const float* aligned) { return *reinterpret_cast<const vfloat*>(aligned); }

inline void store(float* aligned, vfloat value) { *reinterpret_cast<vfloat*>(aligned) = value; }

// Lane-wise max(x, bound) / min(x, bound) with x86 MAXPS/MINPS semantics (a NaN x gives bound).
// Compilers keep the IEEE meaning of a vector ?: and emit compare + blend for it, so the x86
// builds name the one-instruction forms directly.
inline vfloat max_with(vfloat x, vfloat bound) {
#if defined(__AVX512F__) && VMDDPM_SIMD_LANES == 16
  return (vfloat)_mm512_max_ps((__m512)x, (__m512)bound);
#elif defined(__AVX__) && VMDDPM_SIMD_LANES == 8
  return (vfloat)_mm256_max_ps((__m256)x, (__m256)bound);
#elif defined(__SSE__) && VMDDPM_SIMD_LANES == 4
  return (vfloat)_mm_max_ps((__m128)x, (__m128)bound);
#else
  return x > bound ? x : bound;
#endif
}

inline vfloat min_with(vfloat x, vfloat bound) {
#if defined(__AVX512F__) && VMDDPM_SIMD_LANES == 16
  return (vfloat)_mm512_min_ps((__m512)x, (__m512)bound);
#elif defined(__AVX__) && VMDDPM_SIMD_LANES == 8
  return (vfloat)_mm256_min_ps((__m256)x, (__m256)bound);
#elif defined(__SSE__) && VMDDPM_SIMD_LANES == 4
  return (vfloat)_mm_min_ps((__m128)x, (__m128)bound);
#else
  return x < bound ? x : bound;
#endif
}

// 2^f for f in [-1/2, 1/2]: 1 + f*q(f), q of degree 4, from a minimax fit of the relative error
// with p(0) = 1 exactly (fit error 9.1e-8), its fp32 coefficients then nudged by a few ulps to
// lower the error of the fp32 evaluation. Measured against exp2 over every fp32 f in
// [-1/2, 1/2]: relative error at most 1.53e-7 with FMA (the AVX2 and AVX-512 builds), 1.74e-7
// without (baseline). A degree-6 fit had 8.0e-8 / 1.0e-7; the fifth degree saves one FMA per
// state update of the scan.
inline vfloat exp2_polynomial(vfloat f) {
  vfloat p = splat(1.326472731307149e-3f);
  p = p * f + 9.671512991189957e-3f;
  p = p * f + 5.550725385546684e-2f;
  p = p * f + 2.4022243916988373e-1f;
  p = p * f + 6.931470036506653e-1f;
  return p * f + 1.0f;
}

// 2^(a*b) = 2^k * p(f) with k = round(a*b) and f = a*b - k in [-1/2, 1/2]. Where the target has
// FMA (-ffp-contract=fast contracts both products) a*b is never rounded: k comes from
// round(a*b + 1.5*2^23 + 127), and f from a*b - k in one rounding. Adding 1.5*2^23 rounds to an
// integer (its ulp is 1) and leaves k + 127 in the low mantissa bits, whose shift into the
// exponent field gives 2^k (the bits above them shift out).
//
// kInRange: the caller guarantees |a*b| <= kExp2InRangeBound (so k + 127 is in [1, 253] and no
// clamp binds), and a, b finite; NaN products stay NaN. Otherwise the result is clamped as
// exp2_approx's: 0 from -126.5 down, 2^127.5 (2.4e38) above 127.5, 0 for NaN. Where both apply
// the two give identical bits.
constexpr float kExp2InRangeBound = 126.0f;

template <bool kInRange>
inline vfloat exp2_product(vfloat a, vfloat b) {
  const float round_magic = 12582912.0f + 127.0f;  // 1.5*2^23 + the exponent bias
  vfloat shifted = a * b + round_magic;
  if (!kInRange) {
    shifted = min_with(max_with(shifted, splat(round_magic - 127.0f)),
                       splat(round_magic + 127.0f));
  }
  vfloat f = a * b - (shifted - round_magic);
  if (!kInRange) {
    // Only where a clamp bound does f leave [-1/2, 1/2]: keep the polynomial finite there.
    f = min_with(max_with(f, splat(-0.5f)), splat(0.5f));
  }
  const vint scale_bits = (vint)(shifted) << 23;
  return exp2_polynomial(f) * (vfloat)(scale_bits);
}

// 2^x, clamped: inputs from -126.5 down return 0 (the true value would be a subnormal); inputs
// above 127.5 saturate at 2^127.5 (2.4e38) instead of overflowing. Callers wanting e^x pass
// x*log2(e): that product's rounding adds a relative error |x|*6e-8, i.e. an absolute error
// below 2.2e-8 on results <= 1.
inline vfloat exp2_approx(vfloat x) { return exp2_product<false>(x, splat(1.0f)); }

// softplus(x) = log1p(exp(x)), and x itself above 20, matching torch.nn.functional.softplus.
// Written as max(x, 0) + log1p(e) with e = exp(-|x|) in (0, 1], and log1p(e) = 2 atanh(s) with
// s = e / (2 + e) in (0, 1/3]: 2s * Q(s^2), Q a minimax fit of atanh(s)/s of degree 3 after the
// exact 1 (fit error 4.5e-9), so no range reduction and no log. Measured against
// log1p(exp(x)) in double over every fp32 x, FMA builds: at most 0.6 ulp above 2, 3.7 ulp in
// [-2, 2], 5.6 ulp in [-20, -2], 14 ulp in [-60, -20], where the rounding of log2(e) to fp32
// dominates. The log-based version this replaces had 2.7 / 3.6 / 16 / 58 ulp (it rounded
// x*log2(e) before exp2), as the baseline build still has below -2; the AVX2 scan at
// (1, 512, 16, 4096) took 15% longer with it.
inline vfloat softplus(vfloat x) {
  const vint linear = x > splat(20.0f);
  const vfloat magnitude = (vfloat)((vint)(x) & 0x7fffffff);
  const vfloat e = exp2_product<false>(magnitude, splat(-1.44269504088896341f));
  const vfloat s = e / (e + 2.0f);
  const vfloat z = s * s;
  vfloat q = splat(1.400599330663681e-1f);
  q = q * z + 1.4000903069972992e-1f;
  q = q * z + 2.001076340675354e-1f;
  q = q * z + 3.333320915699005e-1f;
  const vfloat two_s = s + s;
  const vfloat log1p_e = (two_s * z) * q + two_s;
  return linear ? x : max_with(x, splat(0.0f)) + log1p_e;
}

}  // namespace
}  // namespace vmddpm::cpu

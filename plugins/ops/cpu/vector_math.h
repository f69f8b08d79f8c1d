// exp, log and softplus on GCC/Clang vector types of VMDDPM_SIMD_LANES floats, built from
// multiplies, adds and bit operations only, so they vectorise in every instruction-set build
// (libm's scalar expf would be called once per lane). Accuracy over the ranges the selective
// scan meets: log about 1 ulp (Cephes' logf coefficients); exp2 within 1.53e-7 relative (our
// own minimax fit, below).
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

// Natural log for positive, finite, normal x: x = m * 2^e with m in [sqrt(1/2), sqrt(2)),
// log x = e*ln2 + log(m) with log(m) from a polynomial in m - 1.
inline vfloat log_approx(vfloat x) {
  const vint bits = (vint)(x);
  vint exponent = (bits >> 23) - 126;  // x = m * 2^exponent, m in [0.5, 1)
  const vint mantissa_bits = (bits & 0x007fffff) | 0x3f000000;
  vfloat m = (vfloat)(mantissa_bits);
  // Where m < sqrt(1/2) use 2m and exponent - 1 instead, centring m - 1 on zero.
  const vint below = m < splat(0.707106781186547524f);
  exponent += below;  // below is -1 where true
  const vint m_if_below = below & (vint)(m);
  m = m + (vfloat)(m_if_below) - 1.0f;
  const vfloat e = __builtin_convertvector(exponent, vfloat);
  const vfloat z = m * m;
  vfloat y = splat(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y = y + e * -2.12194440e-4f;
  y = y - 0.5f * z;
  return m + y + e * 0.693359375f;
}

// softplus(x) = log1p(exp(x)), and x itself above 20, matching torch.nn.functional.softplus.
inline vfloat softplus(vfloat x) {
  const vint linear = x > splat(20.0f);
  const vfloat e = exp2_approx((linear ? splat(20.0f) : x) * 1.44269504088896341f);
  const vfloat one_plus_e = 1.0f + e;
  // log1p(e) = log(1+e) * e / ((1+e) - 1): dividing by the rounded (1+e) - 1 cancels the
  // rounding error of 1+e. Where 1+e rounds to 1, e is below fp32 resolution and log1p(e) = e.
  const vfloat rounded_e = one_plus_e - 1.0f;
  const vint tiny = rounded_e == splat(0.0f);
  const vfloat log1p_e =
      tiny ? e : log_approx(one_plus_e) * e / (tiny ? splat(1.0f) : rounded_e);
  return linear ? x : log1p_e;
}

}  // namespace
}  // namespace vmddpm::cpu

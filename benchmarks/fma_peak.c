// This machine's peak rate of 256-bit fused multiply-adds on one core: the ceiling the AVX2
// selective scan is measured against (README, "Native kernels"). 14 independent FMA chains keep
// both FMA pipes busy whatever the FMA latency; run one copy per core to see the whole machine.
//
//     cc -O2 -mavx2 -mfma benchmarks/fma_peak.c -o fma_peak && (./fma_peak & ./fma_peak & wait)
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

enum { kChains = 14 };

int main(void) {
  const long iterations = 200000000;
  const __m256 scale = _mm256_set1_ps(0.999f);
  const __m256 offset = _mm256_set1_ps(0.001f);
  __m256 chains[kChains];
  for (int i = 0; i < kChains; ++i) chains[i] = _mm256_set1_ps((float)i);

  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (long k = 0; k < iterations; ++k) {
    for (int i = 0; i < kChains; ++i) chains[i] = _mm256_fmadd_ps(chains[i], scale, offset);
  }
  clock_gettime(CLOCK_MONOTONIC, &end);

  const double seconds = (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) * 1e-9;
  float sink = 0.0f;  // keeps the chains live
  for (int i = 0; i < kChains; ++i) sink += chains[i][0];
  printf("%.2f G 256-bit FMA/s on one core (checksum %.3f)\n",
         (double)iterations * kChains / seconds / 1e9, sink);
  return 0;
}

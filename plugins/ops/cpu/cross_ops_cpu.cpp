// C entry points of the CPU cross_scan (gather by table) and cross_merge (scatter-add by table).
// Memory-bound index shuffles, so plain loops compiled for the baseline target suffice.
#include <cinttypes>
#include <cstdint>
#include <memory>
#include <new>

#include "../abi/error.h"
#include "../abi/validate.h"
#include "half_convert.h"
#include "thread_scratch.h"
#include "vmddpm/ops.h"

namespace vmddpm::cpu {
namespace {

constexpr int64_t kMinElementsForThreads = 1 << 15;

// Host tables can be checked, so an entry outside the grid is an error rather than a wild read.
int check_table(const char* op, const CrossProblem& p) {
  for (int64_t k = 0; k < p.routes; ++k) {
    for (int64_t l = 0; l < p.length; ++l) {
      const int64_t position = p.table[k * p.length + l];
      if (position < 0 || position >= p.length) {
        return fail(VMDDPM_ERROR_INVALID_ARGUMENT,
                    "%s: table[%" PRId64 "][%" PRId64 "] = %" PRId64
                    " is outside the grid 0..%" PRId64,
                    op, k, l, position, p.length - 1);
      }
    }
  }
  return VMDDPM_OK;
}

// A gather moves elements without arithmetic, so it copies raw storage of the element's width.
template <typename Storage>
void cross_scan_rows(const CrossProblem& p) {
  const auto* x = static_cast<const Storage*>(p.in);
  auto* out = static_cast<Storage*>(p.out);
  const int64_t rows = p.batch * p.dim;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * p.length >= kMinElementsForThreads)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t b = row / p.dim;
    const int64_t d = row % p.dim;
    const Storage* source = x + row * p.length;
    for (int64_t k = 0; k < p.routes; ++k) {
      const int64_t* route = p.table + k * p.length;
      Storage* target = out + ((b * p.routes + k) * p.dim + d) * p.length;
      for (int64_t l = 0; l < p.length; ++l) target[l] = source[route[l]];
    }
  }
}

// Sums every route's contribution to a grid row in fp32 and rounds to the io dtype once.
template <typename Io>
bool cross_merge_rows(const CrossProblem& p) {
  using Storage = typename Io::Storage;
  const auto* ys = static_cast<const Storage*>(p.in);
  auto* out = static_cast<Storage*>(p.out);
  const int64_t rows = p.batch * p.dim;
  using Sums = std::unique_ptr<float[]>;  // one grid row of fp32 sums per thread
  return run_with_thread_scratch<Sums>(
      rows > 1 && rows * p.length >= kMinElementsForThreads,
      [&](Sums& sums) {
        sums.reset(new (std::nothrow) float[p.length]);
        return sums != nullptr;
      },
      [&](Sums& sums) {
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; ++row) {
          const int64_t b = row / p.dim;
          const int64_t d = row % p.dim;
          for (int64_t position = 0; position < p.length; ++position) sums[position] = 0.0f;
          for (int64_t k = 0; k < p.routes; ++k) {
            const int64_t* route = p.table + k * p.length;
            const Storage* source = ys + ((b * p.routes + k) * p.dim + d) * p.length;
            for (int64_t l = 0; l < p.length; ++l) sums[route[l]] += Io::to_float(source[l]);
          }
          Storage* target = out + row * p.length;
          for (int64_t position = 0; position < p.length; ++position) {
            target[position] = Io::from_float(sums[position]);
          }
        }
      },
      [](Sums&) {});  // the unique_ptr frees the row
}

}  // namespace
}  // namespace vmddpm::cpu

extern "C" int vmddpm_cross_scan_cpu(const void* x, const int64_t* table, void* out,
                                     int64_t batch, int64_t dim, int64_t height, int64_t width,
                                     int64_t routes, int dtype) {
  const char* op = "cross_scan_cpu";
  return vmddpm::guard_abi_call(op, [&] {
    vmddpm::CrossProblem problem{x, table, out, batch, dim, 0, routes, dtype};
    int status = vmddpm::validate_cross(op, "x", problem, height, width);
    if (status != VMDDPM_OK) return status;
    if ((status = vmddpm::cpu::check_table(op, problem)) != VMDDPM_OK) return status;
    if (vmddpm::dtype_size(dtype) == 4) {
      vmddpm::cpu::cross_scan_rows<uint32_t>(problem);
    } else {
      vmddpm::cpu::cross_scan_rows<uint16_t>(problem);
    }
    return static_cast<int>(VMDDPM_OK);
  });
}

extern "C" int vmddpm_cross_merge_cpu(const void* ys, const int64_t* table, void* out,
                                      int64_t batch, int64_t dim, int64_t height, int64_t width,
                                      int64_t routes, int dtype) {
  using namespace vmddpm::cpu;
  const char* op = "cross_merge_cpu";
  return vmddpm::guard_abi_call(op, [&] {
    vmddpm::CrossProblem problem{ys, table, out, batch, dim, 0, routes, dtype};
    int status = vmddpm::validate_cross(op, "ys", problem, height, width);
    if (status != VMDDPM_OK) return status;
    if ((status = check_table(op, problem)) != VMDDPM_OK) return status;
    bool done;
    switch (dtype) {
      case VMDDPM_DTYPE_FLOAT16:
        done = cross_merge_rows<Float16Io>(problem);
        break;
      case VMDDPM_DTYPE_BFLOAT16:
        done = cross_merge_rows<BFloat16Io>(problem);
        break;
      default:
        done = cross_merge_rows<Float32Io>(problem);
        break;
    }
    return done ? static_cast<int>(VMDDPM_OK)
                : vmddpm::fail(VMDDPM_ERROR_OUT_OF_MEMORY,
                               "%s: could not allocate per-thread scratch memory", op);
  });
}

#include "pinned_scan_table.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace vmddpm::trt {

PinnedScanTable::PinnedScanTable(plugin_core::ScanOrder order, int64_t height, int64_t width)
    : order_(order), height_(height), width_(width) {
  const std::vector<int64_t> table = plugin_core::scan_table(order, height, width);
  bytes_ = table.size() * sizeof(int64_t);
  void* pinned = nullptr;
  const cudaError_t status = cudaMallocHost(&pinned, bytes_);
  if (status != cudaSuccess) {
    throw std::runtime_error("cannot page-lock " + std::to_string(bytes_) + " bytes for the " +
                             plugin_core::scan_order_name(order) + " scan table: " + cudaGetErrorString(status));
  }
  data_ = static_cast<int64_t*>(pinned);
  std::memcpy(data_, table.data(), bytes_);
}

PinnedScanTable::~PinnedScanTable() {
  // At process exit the CUDA runtime may already be gone; nothing useful can be done about a
  // failure here.
  cudaFreeHost(data_);
}

std::shared_ptr<const PinnedScanTable> PinnedScanTable::acquire(plugin_core::ScanOrder order, int64_t height,
                                                                int64_t width) {
  static std::mutex mutex;
  // Weak: a table lives exactly as long as some plugin uses it.
  static std::map<std::tuple<int32_t, int64_t, int64_t>, std::weak_ptr<const PinnedScanTable>> cache;
  const auto key = std::make_tuple(static_cast<int32_t>(order), height, width);
  const std::lock_guard<std::mutex> lock(mutex);
  if (auto existing = cache[key].lock()) return existing;
  std::shared_ptr<const PinnedScanTable> table(new PinnedScanTable(order, height, width));
  cache[key] = table;
  return table;
}

}  // namespace vmddpm::trt

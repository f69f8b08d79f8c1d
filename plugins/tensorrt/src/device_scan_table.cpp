#include "device_scan_table.h"

#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace vmddpm::trt {
namespace {

std::string cuda_failure(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
}

}  // namespace

DeviceScanTable::DeviceScanTable(plugin_core::ScanOrder order, int64_t height, int64_t width, int device)
    : device_(device) {
  const std::vector<int64_t> table = plugin_core::scan_table(order, height, width);
  bytes_ = table.size() * sizeof(int64_t);
  const std::string what = std::string("the ") + plugin_core::scan_order_name(order) + " scan table (" +
                           std::to_string(bytes_) + " bytes)";
  void* memory = nullptr;
  cudaError_t status = cudaMalloc(&memory, bytes_);
  if (status != cudaSuccess) {
    throw std::runtime_error("cannot allocate device memory for " + what + ": " + cuda_failure(status));
  }
  data_ = static_cast<int64_t*>(memory);
  // Synchronous: the table is complete before any enqueue can read it.
  status = cudaMemcpy(data_, table.data(), bytes_, cudaMemcpyHostToDevice);
  if (status != cudaSuccess) {
    cudaFree(data_);
    throw std::runtime_error("cannot copy " + what + " to the device: " + cuda_failure(status));
  }
}

DeviceScanTable::~DeviceScanTable() {
  // Freed on the device it was allocated on. At process exit the CUDA runtime may already be
  // gone; nothing useful can be done about a failure here.
  int current = 0;
  const bool restore = cudaGetDevice(&current) == cudaSuccess && current != device_;
  if (restore) cudaSetDevice(device_);
  cudaFree(data_);
  if (restore) cudaSetDevice(current);
}

std::shared_ptr<const DeviceScanTable> DeviceScanTable::acquire(plugin_core::ScanOrder order, int64_t height,
                                                                int64_t width) {
  int device = 0;
  const cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("no CUDA device for the ") + plugin_core::scan_order_name(order) +
                             " scan table: " + cuda_failure(status));
  }
  static std::mutex mutex;
  // Weak: a table lives exactly as long as some plugin uses it.
  static std::map<std::tuple<int, int32_t, int64_t, int64_t>, std::weak_ptr<const DeviceScanTable>> cache;
  const auto key = std::make_tuple(device, static_cast<int32_t>(order), height, width);
  const std::lock_guard<std::mutex> lock(mutex);
  if (auto existing = cache[key].lock()) return existing;
  std::shared_ptr<const DeviceScanTable> table(new DeviceScanTable(order, height, width, device));
  cache[key] = table;
  return table;
}

}  // namespace vmddpm::trt

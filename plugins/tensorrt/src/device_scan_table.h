// Scan tables in page-locked host memory, shared by every plugin that needs the same one.
//
// The cross plugins copy their table into their TensorRT workspace at each enqueue
// (cudaMemcpyAsync), which keeps enqueue free of allocations and leaves device memory to
// TensorRT. The source must be page-locked: a copy from pageable memory cannot be captured
// into a CUDA graph, and TensorRTDenoiser captures one per batch size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "scan_table.h"

namespace vmddpm::trt {

class PinnedScanTable {
 public:
  // The table of (order, height, width), built and page-locked on first use, then shared
  // while anyone holds it. Throws std::runtime_error when CUDA cannot page-lock memory.
  static std::shared_ptr<const PinnedScanTable> acquire(plugin_core::ScanOrder order, int64_t height, int64_t width);

  ~PinnedScanTable();
  PinnedScanTable(const PinnedScanTable&) = delete;
  PinnedScanTable& operator=(const PinnedScanTable&) = delete;

  const int64_t* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  plugin_core::ScanOrder order() const { return order_; }
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }

 private:
  PinnedScanTable(plugin_core::ScanOrder order, int64_t height, int64_t width);

  plugin_core::ScanOrder order_;
  int64_t height_;
  int64_t width_;
  int64_t* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace vmddpm::trt

// Scan tables in device memory, uploaded once per (device, order, height, width) and shared by
// every plugin that needs the same one.
//
// The cross plugins pass the table to their kernels by device pointer, so enqueue neither copies
// nor allocates, and a CUDA graph captured around it replays no copy. The upload happens in
// onShapeChange, which TensorRT calls before an enqueue on new shapes: outside graph capture
// when the caller enqueues once before capturing, as TensorRT asks and TensorRTDenoiser does
// (inside a capture CUDA refuses the allocation, and onShapeChange reports that).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "scan_table.h"

namespace vmddpm::trt {

class DeviceScanTable {
 public:
  // The table of (order, height, width) on the current CUDA device, built and uploaded on first
  // use, then shared while anyone holds it. Throws std::runtime_error when CUDA cannot allocate
  // or copy it.
  static std::shared_ptr<const DeviceScanTable> acquire(plugin_core::ScanOrder order, int64_t height, int64_t width);

  ~DeviceScanTable();
  DeviceScanTable(const DeviceScanTable&) = delete;
  DeviceScanTable& operator=(const DeviceScanTable&) = delete;

  const int64_t* data() const { return data_; }  // device memory
  size_t bytes() const { return bytes_; }

 private:
  DeviceScanTable(plugin_core::ScanOrder order, int64_t height, int64_t width, int device);

  int device_;
  int64_t* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace vmddpm::trt

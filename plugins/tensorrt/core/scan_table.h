// Scan orders as index tables, the C++ twin of vmddpm_deploy/ops/scan_orders.py.
//
// table[k * L + l] (L = height * width) is the row-major position h * width + w of the token
// route k visits at step l. Both orders have kRoutes = 4 routes and every route is a
// permutation of 0..L-1. tests/plugins/test_plugin_core.py checks equality with the Python
// tables, which stay the definition.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vmddpm::plugin_core {

// Routes of every order (VMamba's four directions).
constexpr int64_t kRoutes = 4;

enum class ScanOrder : int32_t {
  kCross = 0,  // row-major, column-major, both reversed
  kRegen = 1,  // row snake, column snake, both reversed
};

// "cross" / "regen": the names of configs, ONNX attributes and serialized plugin fields.
const char* scan_order_name(ScanOrder order);

// Throws AttributeError naming the accepted orders when `name` is none of them.
ScanOrder parse_scan_order(std::string_view name);

// Comma-separated list of the accepted names, for messages.
std::string scan_order_choices();

// The (kRoutes, height * width) table, row-major. Throws ShapeError unless both extents are
// positive and height * width fits the kernels' 32-bit positions.
std::vector<int64_t> scan_table(ScanOrder order, int64_t height, int64_t width);

}  // namespace vmddpm::plugin_core

#include "scan_table.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "errors.h"

namespace vmddpm::plugin_core {
namespace {

constexpr struct {
  ScanOrder order;
  const char* name;
} kOrderNames[] = {{ScanOrder::kCross, "cross"}, {ScanOrder::kRegen, "regen"}};

// Each writer fills one route of length height * width.
void row_major(int64_t height, int64_t width, int64_t* route) {
  for (int64_t position = 0; position < height * width; ++position) route[position] = position;
}

void col_major(int64_t height, int64_t width, int64_t* route) {
  int64_t step = 0;
  for (int64_t w = 0; w < width; ++w) {
    for (int64_t h = 0; h < height; ++h) route[step++] = h * width + w;
  }
}

// Odd rows run right-to-left, so consecutive steps stay 4-neighbours.
void row_snake(int64_t height, int64_t width, int64_t* route) {
  int64_t step = 0;
  for (int64_t h = 0; h < height; ++h) {
    for (int64_t i = 0; i < width; ++i) {
      const int64_t w = h % 2 == 0 ? i : width - 1 - i;
      route[step++] = h * width + w;
    }
  }
}

// Odd columns run bottom-to-top.
void col_snake(int64_t height, int64_t width, int64_t* route) {
  int64_t step = 0;
  for (int64_t w = 0; w < width; ++w) {
    for (int64_t i = 0; i < height; ++i) {
      const int64_t h = w % 2 == 0 ? i : height - 1 - i;
      route[step++] = h * width + w;
    }
  }
}

void reversed(const int64_t* route, int64_t length, int64_t* out) {
  std::reverse_copy(route, route + length, out);
}

}  // namespace

const char* scan_order_name(ScanOrder order) {
  for (const auto& entry : kOrderNames) {
    if (entry.order == order) return entry.name;
  }
  throw AttributeError("unknown scan order code " + std::to_string(static_cast<int>(order)));
}

std::string scan_order_choices() {
  std::string choices;
  for (const auto& entry : kOrderNames) {
    if (!choices.empty()) choices += ", ";
    choices += entry.name;
  }
  return choices;
}

ScanOrder parse_scan_order(std::string_view name) {
  for (const auto& entry : kOrderNames) {
    if (name == entry.name) return entry.order;
  }
  throw AttributeError("unknown scan order '" + std::string(name) + "'; choose one of " +
                       scan_order_choices());
}

std::vector<int64_t> scan_table(ScanOrder order, int64_t height, int64_t width) {
  if (height < 1 || width < 1) {
    throw ShapeError("scan grid must be at least 1x1, got " + std::to_string(height) + "x" +
                     std::to_string(width));
  }
  if (height > std::numeric_limits<int32_t>::max() / width) {
    throw ShapeError("scan grid " + std::to_string(height) + "x" + std::to_string(width) +
                     " has more than 2^31-1 positions");
  }
  const int64_t length = height * width;
  std::vector<int64_t> table(static_cast<size_t>(kRoutes * length));
  int64_t* routes[kRoutes];
  for (int64_t k = 0; k < kRoutes; ++k) routes[k] = table.data() + k * length;
  switch (order) {
    case ScanOrder::kCross:
      row_major(height, width, routes[0]);
      col_major(height, width, routes[1]);
      break;
    case ScanOrder::kRegen:
      row_snake(height, width, routes[0]);
      col_snake(height, width, routes[1]);
      break;
    default:
      throw AttributeError("unknown scan order code " + std::to_string(static_cast<int>(order)));
  }
  // Routes 2 and 3 run routes 0 and 1 backwards, in both orders.
  reversed(routes[0], length, routes[2]);
  reversed(routes[1], length, routes[3]);
  return table;
}

}  // namespace vmddpm::plugin_core

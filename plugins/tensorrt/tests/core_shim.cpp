// A C interface over the TensorRT-free plugin core, for tests/plugins/test_plugin_core.py
// (ctypes). Test support only: nothing ships it.
//
// Functions returning int give 0 on success and -1 on failure, with the core's message copied
// into `error` (capacity `error_size`). Ops are OpKind codes; shapes travel as a rank per input
// and the extents of all inputs concatenated.
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <vector>

#include "attributes.h"
#include "op_rules.h"
#include "scan_table.h"

#define SHIM_API extern "C" __attribute__((visibility("default")))

namespace core = vmddpm::plugin_core;

namespace {

struct ShimAttributes {
  int32_t delta_softplus;
  int32_t scan_order;
  int64_t height;
  int64_t width;
};

core::Attributes from_shim(const ShimAttributes& a) {
  core::Attributes attributes;
  attributes.delta_softplus = a.delta_softplus != 0;
  attributes.scan_order = static_cast<core::ScanOrder>(a.scan_order);
  attributes.height = a.height;
  attributes.width = a.width;
  return attributes;
}

ShimAttributes to_shim(const core::Attributes& a) {
  return {a.delta_softplus ? 1 : 0, static_cast<int32_t>(a.scan_order), a.height, a.width};
}

std::vector<core::Shape> shapes(int32_t count, const int32_t* ranks, const int64_t* dims) {
  std::vector<core::Shape> result;
  for (int32_t i = 0; i < count; ++i) {
    result.emplace_back(dims, dims + ranks[i]);
    dims += ranks[i];
  }
  return result;
}

template <typename Body>
int guarded(char* error, size_t error_size, Body&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& exception) {
    std::snprintf(error, error_size, "%s", exception.what());
    return -1;
  }
}

}  // namespace

SHIM_API int vmddpm_core_op_code(const char* name, int32_t* op, char* error, size_t error_size) {
  return guarded(error, error_size, [&] { *op = static_cast<int32_t>(core::parse_op_name(name)); });
}

SHIM_API int vmddpm_core_scan_table(const char* order, int64_t height, int64_t width, int64_t* out,
                                    int64_t capacity, char* error, size_t error_size) {
  return guarded(error, error_size, [&] {
    const std::vector<int64_t> table = core::scan_table(core::parse_scan_order(order), height, width);
    if (static_cast<int64_t>(table.size()) > capacity) throw std::length_error("output buffer too small");
    std::memcpy(out, table.data(), table.size() * sizeof(int64_t));
  });
}

SHIM_API int32_t vmddpm_core_field_specs(int32_t op, const char** names, int32_t* types, int32_t capacity) {
  const auto& specs = core::field_specs(static_cast<core::OpKind>(op));
  for (int32_t i = 0; i < capacity && i < static_cast<int32_t>(specs.size()); ++i) {
    names[i] = specs[static_cast<size_t>(i)].name;
    types[i] = static_cast<int32_t>(specs[static_cast<size_t>(i)].type);
  }
  return static_cast<int32_t>(specs.size());
}

SHIM_API int vmddpm_core_parse(int32_t op, int32_t count, const char* const* names,
                               const void* const* data, const int32_t* types, const int32_t* lengths,
                               ShimAttributes* out, char* error, size_t error_size) {
  return guarded(error, error_size, [&] {
    std::vector<core::FieldView> fields;
    for (int32_t i = 0; i < count; ++i) {
      fields.push_back({names[i], data[i], static_cast<core::FieldType>(types[i]), lengths[i]});
    }
    *out = to_shim(core::parse_attributes(static_cast<core::OpKind>(op), fields.data(), count));
  });
}

SHIM_API void* vmddpm_core_serialize(int32_t op, const ShimAttributes* attributes, char* error,
                                     size_t error_size) {
  core::SerializedFields* fields = nullptr;
  guarded(error, error_size,
          [&] { fields = new core::SerializedFields(static_cast<core::OpKind>(op), from_shim(*attributes)); });
  return fields;
}

SHIM_API int32_t vmddpm_core_serialized_count(const void* handle) {
  return static_cast<const core::SerializedFields*>(handle)->size();
}

SHIM_API void vmddpm_core_serialized_field(const void* handle, int32_t index, const char** name,
                                           const void** data, int32_t* type, int32_t* length) {
  const core::FieldView& field = static_cast<const core::SerializedFields*>(handle)->data()[index];
  *name = field.name;
  *data = field.data;
  *type = static_cast<int32_t>(field.type);
  *length = field.length;
}

SHIM_API void vmddpm_core_serialized_free(void* handle) { delete static_cast<core::SerializedFields*>(handle); }

SHIM_API int vmddpm_core_output_shape(int32_t op, const ShimAttributes* attributes, int32_t count,
                                      const int32_t* ranks, const int64_t* dims, int64_t* out,
                                      int32_t* out_rank, char* error, size_t error_size) {
  return guarded(error, error_size, [&] {
    const core::Shape shape =
        core::output_shape(static_cast<core::OpKind>(op), from_shim(*attributes), shapes(count, ranks, dims));
    std::memcpy(out, shape.data(), shape.size() * sizeof(int64_t));
    *out_rank = static_cast<int32_t>(shape.size());
  });
}

// Axis a of the rule: constants[a] * prod over j < factor_counts[a] of
// input factors[(a * max_factors + j) * 2] axis factors[(a * max_factors + j) * 2 + 1].
SHIM_API int vmddpm_core_output_rule(int32_t op, const ShimAttributes* attributes, int32_t max_factors,
                                     int64_t* constants, int32_t* factor_counts, int32_t* factors,
                                     int32_t* out_rank, char* error, size_t error_size) {
  return guarded(error, error_size, [&] {
    const core::ShapeRule rule = core::output_shape_rule(static_cast<core::OpKind>(op), from_shim(*attributes));
    for (size_t axis = 0; axis < rule.size(); ++axis) {
      const core::DimRule& dim = rule[axis];
      if (static_cast<int32_t>(dim.factors.size()) > max_factors) throw std::length_error("too many factors");
      constants[axis] = dim.constant;
      factor_counts[axis] = static_cast<int32_t>(dim.factors.size());
      for (size_t j = 0; j < dim.factors.size(); ++j) {
        factors[(axis * static_cast<size_t>(max_factors) + j) * 2] = dim.factors[j].input;
        factors[(axis * static_cast<size_t>(max_factors) + j) * 2 + 1] = dim.factors[j].axis;
      }
    }
    *out_rank = static_cast<int32_t>(rule.size());
  });
}

SHIM_API int32_t vmddpm_core_type_slots(int32_t op, int32_t* slots, int32_t capacity) {
  const auto& table = core::type_slots(static_cast<core::OpKind>(op));
  for (int32_t i = 0; i < capacity && i < static_cast<int32_t>(table.size()); ++i) {
    slots[i] = static_cast<int32_t>(table[static_cast<size_t>(i)]);
  }
  return static_cast<int32_t>(table.size());
}

SHIM_API int32_t vmddpm_core_supports(int32_t op, int32_t position, const int32_t* types, int32_t linear) {
  std::vector<core::TensorType> converted;
  for (int32_t i = 0; i <= position; ++i) converted.push_back(static_cast<core::TensorType>(types[i]));
  return core::supports_combination(static_cast<core::OpKind>(op), position, converted.data(), linear != 0);
}

SHIM_API int vmddpm_core_io_type(int32_t op, int32_t count, const int32_t* types, int32_t* out, char* error,
                                 size_t error_size) {
  return guarded(error, error_size, [&] {
    std::vector<core::TensorType> converted;
    for (int32_t i = 0; i < count; ++i) converted.push_back(static_cast<core::TensorType>(types[i]));
    *out = static_cast<int32_t>(core::io_type(static_cast<core::OpKind>(op), converted.data(), count));
  });
}

SHIM_API int vmddpm_core_selective_scan_sizes(const int32_t* ranks, const int64_t* dims, int64_t* out,
                                              char* error, size_t error_size) {
  return guarded(error, error_size, [&] {
    const core::SelectiveScanSizes s = core::selective_scan_sizes(shapes(7, ranks, dims));
    const int64_t values[] = {s.batch, s.channels, s.routes, s.state, s.length};
    std::memcpy(out, values, sizeof values);
  });
}

SHIM_API int vmddpm_core_cross_sizes(int32_t op, const ShimAttributes* attributes, int32_t rank,
                                     const int64_t* dims, int64_t* out, char* error, size_t error_size) {
  return guarded(error, error_size, [&] {
    const core::CrossSizes s =
        core::cross_sizes(static_cast<core::OpKind>(op), from_shim(*attributes), shapes(1, &rank, dims));
    const int64_t values[] = {s.batch, s.dim, s.height, s.width, s.routes};
    std::memcpy(out, values, sizeof values);
  });
}

SHIM_API int vmddpm_core_cross_workspace_bytes(int32_t op, int64_t routes, int64_t length, int64_t merge_kernel_bytes,
                                               uint64_t* out, char* error, size_t error_size) {
  return guarded(error, error_size, [&] {
    *out = core::cross_workspace_bytes(static_cast<core::OpKind>(op), routes, length, merge_kernel_bytes);
  });
}

#include "attributes.h"

#include <cstring>
#include <limits>
#include <optional>

#include "errors.h"

namespace vmddpm::plugin_core {
namespace {

constexpr const char* kDeltaSoftplus = "delta_softplus";
constexpr const char* kScanOrder = "scan_order";
constexpr const char* kHeight = "height";
constexpr const char* kWidth = "width";
// Attributes that select the plugin rather than configure it; a parser may pass them on.
constexpr const char* kVersionField = "plugin_version";
constexpr const char* kNamespaceField = "plugin_namespace";

constexpr struct {
  OpKind op;
  const char* name;
  int32_t inputs;
} kOps[] = {
    {OpKind::kSelectiveScan, "VmddpmSelectiveScan", 7},  // u, delta, A, B, C, D, delta_bias
    {OpKind::kCrossScan, "VmddpmCrossScan", 1},          // x
    {OpKind::kCrossMerge, "VmddpmCrossMerge", 1},        // ys
};

[[noreturn]] void fail(OpKind op, const std::string& message) {
  throw AttributeError(std::string(op_name(op)) + ": " + message);
}

int64_t read_integer(OpKind op, const FieldView& field) {
  if (field.length != 1) {
    fail(op, "attribute '" + std::string(field.name) + "' must hold one integer, got " +
                 std::to_string(field.length) + " values");
  }
  switch (field.type) {
    case FieldType::kInt8:
      return *static_cast<const int8_t*>(field.data);
    case FieldType::kInt16:
      return *static_cast<const int16_t*>(field.data);
    case FieldType::kInt32:
      return *static_cast<const int32_t*>(field.data);
    case FieldType::kInt64:
      return *static_cast<const int64_t*>(field.data);
    default:
      fail(op, "attribute '" + std::string(field.name) + "' must be an integer (kINT32), got " +
                   field_type_name(field.type));
  }
}

// Strings arrive with or without a terminating NUL (the ONNX parser and serialized engines
// differ), so trailing NULs are dropped; one inside the text is an error.
std::string read_string(OpKind op, const FieldView& field) {
  if (field.type != FieldType::kChar) {
    fail(op, "attribute '" + std::string(field.name) + "' must be a string (kCHAR), got " +
                 field_type_name(field.type));
  }
  if (field.length < 0) fail(op, "attribute '" + std::string(field.name) + "' has a negative length");
  std::string text(static_cast<const char*>(field.data), static_cast<size_t>(field.length));
  while (!text.empty() && text.back() == '\0') text.pop_back();
  if (text.find('\0') != std::string::npos) {
    fail(op, "attribute '" + std::string(field.name) + "' contains a NUL character");
  }
  return text;
}

int64_t read_extent(OpKind op, const FieldView& field) {
  const int64_t value = read_integer(op, field);
  if (value < 1 || value > std::numeric_limits<int32_t>::max()) {
    fail(op, "attribute '" + std::string(field.name) + "' must be a positive int32, got " +
                 std::to_string(value));
  }
  return value;
}

std::string known_names(OpKind op) {
  std::string names;
  for (const FieldSpec& spec : field_specs(op)) {
    if (!names.empty()) names += ", ";
    names += spec.name;
  }
  return names;
}

}  // namespace

const char* op_name(OpKind op) {
  for (const auto& entry : kOps) {
    if (entry.op == op) return entry.name;
  }
  throw AttributeError("unknown op code " + std::to_string(static_cast<int>(op)));
}

OpKind parse_op_name(std::string_view name) {
  for (const auto& entry : kOps) {
    if (name == entry.name) return entry.op;
  }
  throw AttributeError("unknown vmddpm plugin '" + std::string(name) +
                       "'; expected VmddpmSelectiveScan, VmddpmCrossScan or VmddpmCrossMerge");
}

int32_t input_count(OpKind op) {
  for (const auto& entry : kOps) {
    if (entry.op == op) return entry.inputs;
  }
  throw AttributeError("unknown op code " + std::to_string(static_cast<int>(op)));
}

std::string field_type_name(FieldType type) {
  switch (type) {
    case FieldType::kFloat16: return "kFLOAT16";
    case FieldType::kFloat32: return "kFLOAT32";
    case FieldType::kFloat64: return "kFLOAT64";
    case FieldType::kInt8: return "kINT8";
    case FieldType::kInt16: return "kINT16";
    case FieldType::kInt32: return "kINT32";
    case FieldType::kChar: return "kCHAR";
    case FieldType::kDims: return "kDIMS";
    case FieldType::kUnknown: return "kUNKNOWN";
    case FieldType::kBFloat16: return "kBF16";
    case FieldType::kInt64: return "kINT64";
  }
  return "type code " + std::to_string(static_cast<int>(type));
}

const std::vector<FieldSpec>& field_specs(OpKind op) {
  static const std::vector<FieldSpec> selective_scan{{kDeltaSoftplus, FieldType::kInt32}};
  static const std::vector<FieldSpec> cross_scan{{kScanOrder, FieldType::kChar}};
  static const std::vector<FieldSpec> cross_merge{{kScanOrder, FieldType::kChar},
                                                  {kHeight, FieldType::kInt32},
                                                  {kWidth, FieldType::kInt32}};
  switch (op) {
    case OpKind::kSelectiveScan: return selective_scan;
    case OpKind::kCrossScan: return cross_scan;
    case OpKind::kCrossMerge: return cross_merge;
  }
  throw AttributeError("unknown op code " + std::to_string(static_cast<int>(op)));
}

Attributes parse_attributes(OpKind op, const FieldView* fields, int32_t count) {
  if (count < 0 || (count > 0 && fields == nullptr)) {
    fail(op, "no field array for " + std::to_string(count) + " fields");
  }
  Attributes attributes;
  std::optional<ScanOrder> scan_order;
  std::vector<std::string> seen;
  for (int32_t i = 0; i < count; ++i) {
    const FieldView& field = fields[i];
    if (field.name == nullptr) fail(op, "field " + std::to_string(i) + " has no name");
    const std::string name = field.name;
    for (const std::string& earlier : seen) {
      if (earlier == name) fail(op, "attribute '" + name + "' is given twice");
    }
    seen.push_back(name);
    if (field.data == nullptr && field.length != 0) fail(op, "attribute '" + name + "' has no data");

    if (name == kVersionField || name == kNamespaceField) {
      const std::string expected = name == kVersionField ? kPluginVersion : kPluginNamespace;
      const std::string value = read_string(op, field);
      if (value != expected) {
        fail(op, "this library implements " + name + " '" + expected + "', the node asks for '" +
                     value + "'");
      }
    } else if (op == OpKind::kSelectiveScan && name == kDeltaSoftplus) {
      const int64_t value = read_integer(op, field);
      if (value != 0 && value != 1) {
        fail(op, "attribute 'delta_softplus' must be 0 or 1, got " + std::to_string(value));
      }
      attributes.delta_softplus = value == 1;
    } else if (op != OpKind::kSelectiveScan && name == kScanOrder) {
      try {
        scan_order = parse_scan_order(read_string(op, field));
      } catch (const AttributeError& error) {
        fail(op, "attribute 'scan_order': " + std::string(error.what()));
      }
    } else if (op == OpKind::kCrossMerge && name == kHeight) {
      attributes.height = read_extent(op, field);
    } else if (op == OpKind::kCrossMerge && name == kWidth) {
      attributes.width = read_extent(op, field);
    } else {
      fail(op, "unknown attribute '" + name + "'; known: " + known_names(op));
    }
  }

  if (op == OpKind::kSelectiveScan) return attributes;
  // A wrong order would silently scramble the image, so it has no default.
  if (!scan_order) fail(op, "attribute 'scan_order' is required (one of " + scan_order_choices() + ")");
  attributes.scan_order = *scan_order;
  // Merging (batch, K, D, H*W) back to a grid needs the grid: H*W alone does not fix it.
  if (op == OpKind::kCrossMerge && (attributes.height == 0 || attributes.width == 0)) {
    fail(op, "attributes 'height' and 'width' are required (the output grid)");
  }
  return attributes;
}

SerializedFields::SerializedFields(OpKind op, const Attributes& attributes) {
  if (op == OpKind::kSelectiveScan) {
    delta_softplus_ = attributes.delta_softplus ? 1 : 0;
    fields_.push_back({kDeltaSoftplus, &delta_softplus_, FieldType::kInt32, 1});
    return;
  }
  scan_order_ = scan_order_name(attributes.scan_order);
  // The terminating NUL is stored too, so a reader taking data as a C string stays in bounds.
  fields_.push_back({kScanOrder, scan_order_.c_str(), FieldType::kChar,
                     static_cast<int32_t>(scan_order_.size() + 1)});
  if (op == OpKind::kCrossMerge) {
    height_ = static_cast<int32_t>(attributes.height);
    width_ = static_cast<int32_t>(attributes.width);
    fields_.push_back({kHeight, &height_, FieldType::kInt32, 1});
    fields_.push_back({kWidth, &width_, FieldType::kInt32, 1});
  }
}

}  // namespace vmddpm::plugin_core

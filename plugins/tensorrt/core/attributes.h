// The three plugins' identities and attributes, without TensorRT.
//
// TensorRT hands a plugin creator its attributes as (name, data, type, length) fields: from the
// ONNX node's attributes when the parser builds a network, and from getFieldsToSerialize()'s
// output when an engine is deserialised. parse_attributes() reads both; SerializedFields
// writes the second. FieldType mirrors nvinfer1::PluginFieldType value for value (the adapter
// static_asserts it), so fields cross the adapter by a cast.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "scan_table.h"

namespace vmddpm::plugin_core {

// Plugin version and namespace: the ONNX nodes' plugin_version / plugin_namespace attributes.
constexpr const char* kPluginVersion = "1";
constexpr const char* kPluginNamespace = "vmddpm";

enum class OpKind : int32_t { kSelectiveScan = 0, kCrossScan = 1, kCrossMerge = 2 };

// "VmddpmSelectiveScan", "VmddpmCrossScan", "VmddpmCrossMerge": ONNX op types and plugin names.
const char* op_name(OpKind op);

// Throws AttributeError for a name that is none of the three.
OpKind parse_op_name(std::string_view name);

// Number of inputs (all plugins have one output).
int32_t input_count(OpKind op);

enum class FieldType : int32_t {
  kFloat16 = 0,
  kFloat32 = 1,
  kFloat64 = 2,
  kInt8 = 3,
  kInt16 = 4,
  kInt32 = 5,
  kChar = 6,
  kDims = 7,
  kUnknown = 8,
  kBFloat16 = 9,
  kInt64 = 10,
};

// "kINT32" etc., TensorRT's spelling, for messages.
std::string field_type_name(FieldType type);

// One field as TensorRT passes it; `data` holds `length` elements of `type`.
struct FieldView {
  const char* name;
  const void* data;
  FieldType type;
  int32_t length;
};

// A field a creator advertises (IPluginCreatorV3One::getFieldNames). The ONNX parser reads each
// attribute in the advertised type: kINT32 for ints, kCHAR for strings.
struct FieldSpec {
  const char* name;
  FieldType type;
};
const std::vector<FieldSpec>& field_specs(OpKind op);

// One struct for the three ops; each reads only its own fields (docs/design.md section 2):
//   VmddpmSelectiveScan: delta_softplus        VmddpmCrossScan: scan_order
//   VmddpmCrossMerge:    scan_order, height, width
// VmddpmCrossScan reads its grid off its input; the merge needs it given, because H*W alone
// does not fix the grid.
struct Attributes {
  bool delta_softplus = true;                // the op contract's default
  ScanOrder scan_order = ScanOrder::kCross;  // always given, never defaulted
  int64_t height = 0;                        // VmddpmCrossMerge; 0 for the other ops
  int64_t width = 0;

  bool operator==(const Attributes& other) const {
    return delta_softplus == other.delta_softplus && scan_order == other.scan_order &&
           height == other.height && width == other.width;
  }
};

// Reads and validates `count` fields for `op`. Throws AttributeError (message names the op and
// the field) for an unknown or repeated name, a wrong type or length, an out-of-range value,
// or a missing required field. plugin_version / plugin_namespace fields are accepted when they
// carry this library's values.
Attributes parse_attributes(OpKind op, const FieldView* fields, int32_t count);

// The fields that rebuild `attributes` through parse_attributes(), in storage owned by this
// object (so neither copied nor moved: the views point into it).
class SerializedFields {
 public:
  SerializedFields(OpKind op, const Attributes& attributes);
  SerializedFields(const SerializedFields&) = delete;
  SerializedFields& operator=(const SerializedFields&) = delete;

  const FieldView* data() const { return fields_.data(); }
  int32_t size() const { return static_cast<int32_t>(fields_.size()); }

 private:
  int32_t delta_softplus_ = 1;
  std::string scan_order_;
  int32_t height_ = 0;
  int32_t width_ = 0;
  std::vector<FieldView> fields_;
};

}  // namespace vmddpm::plugin_core

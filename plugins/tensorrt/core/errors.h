// Failures of the TensorRT-free plugin logic. The TensorRT adapter catches them at every
// noexcept boundary and reports what() through TensorRT's logger; the test shim returns it.
#pragma once

#include <stdexcept>

namespace vmddpm::plugin_core {

// A plugin field (ONNX attribute) is missing, unknown, of the wrong type or out of range.
class AttributeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Input ranks or extents that the op contract (docs/design.md section 2) does not allow.
class ShapeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Input types that the op contract does not allow (an int tensor, A in float16, mixed io types).
class DataTypeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace vmddpm::plugin_core

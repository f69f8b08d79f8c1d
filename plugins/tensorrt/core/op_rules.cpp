#include "op_rules.h"

#include <limits>
#include <string>

#include "errors.h"
#include "vmddpm/ops.h"

namespace vmddpm::plugin_core {
namespace {

struct TensorSpec {
  const char* name;
  const char* layout;  // for messages
  size_t rank;
};

const std::vector<TensorSpec>& input_specs(OpKind op) {
  static const std::vector<TensorSpec> selective_scan{
      {"u", "(batch, channels, length)", 3},       {"delta", "(batch, channels, length)", 3},
      {"A", "(channels, state)", 2},               {"B", "(batch, routes, state, length)", 4},
      {"C", "(batch, routes, state, length)", 4},  {"D", "(channels,)", 1},
      {"delta_bias", "(channels,)", 1}};
  static const std::vector<TensorSpec> cross_scan{{"x", "(batch, dim, height, width)", 4}};
  static const std::vector<TensorSpec> cross_merge{{"ys", "(batch, routes, dim, height*width)", 4}};
  switch (op) {
    case OpKind::kSelectiveScan: return selective_scan;
    case OpKind::kCrossScan: return cross_scan;
    case OpKind::kCrossMerge: return cross_merge;
  }
  throw ShapeError("unknown op code " + std::to_string(static_cast<int>(op)));
}

bool known(int64_t extent) { return extent != kDynamicDim; }

// Checks over one op's inputs, with messages naming the tensors.
class ShapeChecker {
 public:
  ShapeChecker(OpKind op, const std::vector<Shape>& inputs)
      : op_(op), inputs_(inputs), specs_(input_specs(op)) {
    if (inputs.size() != specs_.size()) {
      fail("expects " + std::to_string(specs_.size()) + " inputs, got " + std::to_string(inputs.size()));
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].size() != specs_[i].rank) {
        fail(std::string("input ") + specs_[i].name + " must be " + specs_[i].layout + " (rank " +
             std::to_string(specs_[i].rank) + "), got rank " + std::to_string(inputs[i].size()));
      }
      for (size_t axis = 0; axis < inputs[i].size(); ++axis) {
        const int64_t extent = inputs[i][axis];
        // Axis 0 of the batched tensors may be empty; every other extent sizes a kernel loop.
        const int64_t minimum = axis == 0 && specs_[i].rank >= 3 ? 0 : 1;
        if (known(extent) && extent < minimum) {
          fail(describe(i, axis) + " must be at least " + std::to_string(minimum) + ", got " +
               std::to_string(extent));
        }
      }
    }
  }

  int64_t at(size_t input, size_t axis) const { return inputs_[input][axis]; }

  void require_equal(size_t input, size_t axis, size_t other_input, size_t other_axis) const {
    const int64_t a = at(input, axis);
    const int64_t b = at(other_input, other_axis);
    if (known(a) && known(b) && a != b) {
      fail(describe(input, axis) + " is " + std::to_string(a) + " but " +
           describe(other_input, other_axis) + " is " + std::to_string(b));
    }
  }

  void require_value(size_t input, size_t axis, int64_t expected, const std::string& why) const {
    const int64_t a = at(input, axis);
    if (known(a) && a != expected) {
      fail(describe(input, axis) + " must be " + std::to_string(expected) + " (" + why + "), got " +
           std::to_string(a));
    }
  }

  std::string describe(size_t input, size_t axis) const {
    return std::string(specs_[input].name) + " " + specs_[input].layout + " axis " + std::to_string(axis);
  }

  [[noreturn]] void fail(const std::string& message) const {
    throw ShapeError(std::string(op_name(op_)) + ": " + message);
  }

 private:
  OpKind op_;
  const std::vector<Shape>& inputs_;
  const std::vector<TensorSpec>& specs_;
};

enum Input : size_t { kU = 0, kDelta, kA, kB, kC, kD, kDeltaBias };

void check_selective_scan(const ShapeChecker& c) {
  for (size_t axis = 0; axis < 3; ++axis) c.require_equal(kDelta, axis, kU, axis);
  c.require_equal(kA, 0, kU, 1);
  c.require_equal(kB, 0, kU, 0);
  c.require_equal(kB, 2, kA, 1);
  c.require_equal(kB, 3, kU, 2);
  for (size_t axis = 0; axis < 4; ++axis) c.require_equal(kC, axis, kB, axis);
  c.require_equal(kD, 0, kU, 1);
  c.require_equal(kDeltaBias, 0, kU, 1);
  const int64_t channels = c.at(kU, 1);
  const int64_t routes = c.at(kB, 1);
  if (known(channels) && known(routes) && channels % routes != 0) {
    c.fail("channels (" + std::to_string(channels) + ", u axis 1) is not a multiple of routes (" +
           std::to_string(routes) + ", B axis 1)");
  }
  const int64_t state = c.at(kA, 1);
  if (known(state) && state > VMDDPM_MAX_STATE) {
    c.fail("state (" + std::to_string(state) + ", A axis 1) exceeds the kernels' maximum of " +
           std::to_string(VMDDPM_MAX_STATE));
  }
}

void check_grid(const ShapeChecker& c, int64_t height, int64_t width) {
  if (known(height) && known(width) && width > 0 && height > std::numeric_limits<int32_t>::max() / width) {
    c.fail("height*width (" + std::to_string(height) + "x" + std::to_string(width) +
           ") exceeds 2^31-1 positions");
  }
}

void check_cross_scan(const ShapeChecker& c) { check_grid(c, c.at(0, 2), c.at(0, 3)); }

void check_cross_merge(const ShapeChecker& c, const Attributes& attributes) {
  if (attributes.height < 1 || attributes.width < 1) c.fail("needs attributes height and width (the output grid)");
  c.require_value(0, 1, kRoutes, "the scan orders' route count");
  check_grid(c, attributes.height, attributes.width);
  c.require_value(0, 3, attributes.height * attributes.width, "attributes height*width");
}

// Kernel sizes need every extent: a dynamic one here is a caller's bug, not a user's error.
void require_concrete(OpKind op, const std::vector<Shape>& inputs) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    for (size_t axis = 0; axis < inputs[i].size(); ++axis) {
      if (!known(inputs[i][axis])) {
        throw ShapeError(std::string(op_name(op)) + ": input " + input_specs(op)[i].name + " axis " +
                         std::to_string(axis) + " is still dynamic where concrete shapes are needed");
      }
    }
  }
}

}  // namespace

ShapeRule output_shape_rule(OpKind op, const Attributes& attributes) {
  switch (op) {
    case OpKind::kSelectiveScan:  // y: (batch, channels, length), like u
      return {{1, {{0, 0}}}, {1, {{0, 1}}}, {1, {{0, 2}}}};
    case OpKind::kCrossScan:  // (batch, K, dim, height*width)
      return {{1, {{0, 0}}}, {kRoutes, {}}, {1, {{0, 1}}}, {1, {{0, 2}, {0, 3}}}};
    case OpKind::kCrossMerge:  // (batch, dim, height, width)
      return {{1, {{0, 0}}}, {1, {{0, 2}}}, {attributes.height, {}}, {attributes.width, {}}};
  }
  throw ShapeError("unknown op code " + std::to_string(static_cast<int>(op)));
}

Shape evaluate_shape_rule(const ShapeRule& rule, const std::vector<Shape>& inputs) {
  Shape shape;
  for (const DimRule& dim : rule) {
    int64_t extent = dim.constant;
    for (const DimFactor& factor : dim.factors) {
      const int64_t value = inputs.at(static_cast<size_t>(factor.input)).at(static_cast<size_t>(factor.axis));
      if (!known(value)) {
        extent = kDynamicDim;
        break;
      }
      extent *= value;
    }
    shape.push_back(extent);
  }
  return shape;
}

void check_input_shapes(OpKind op, const Attributes& attributes, const std::vector<Shape>& inputs) {
  const ShapeChecker checker(op, inputs);
  switch (op) {
    case OpKind::kSelectiveScan:
      check_selective_scan(checker);
      return;
    case OpKind::kCrossScan:
      check_cross_scan(checker);
      return;
    case OpKind::kCrossMerge:
      check_cross_merge(checker, attributes);
      return;
  }
}

Shape output_shape(OpKind op, const Attributes& attributes, const std::vector<Shape>& inputs) {
  check_input_shapes(op, attributes, inputs);
  return evaluate_shape_rule(output_shape_rule(op, attributes), inputs);
}

const std::vector<TypeSlot>& type_slots(OpKind op) {
  using S = TypeSlot;
  // u, delta, A, B, C, D, delta_bias -> y
  static const std::vector<TypeSlot> selective_scan{S::kIo, S::kIo,      S::kFloat32, S::kIo,
                                                    S::kIo, S::kFloat32, S::kFloat32, S::kIo};
  static const std::vector<TypeSlot> cross{S::kIo, S::kIo};  // x -> out, ys -> out
  return op == OpKind::kSelectiveScan ? selective_scan : cross;
}

bool supports_combination(OpKind op, int32_t position, const TensorType* types, bool linear) {
  const std::vector<TypeSlot>& slots = type_slots(op);
  if (position < 0 || static_cast<size_t>(position) >= slots.size() || !linear) return false;
  const TensorType type = types[position];
  if (slots[static_cast<size_t>(position)] == TypeSlot::kFloat32) return type == TensorType::kFloat32;
  if (type != TensorType::kFloat32 && type != TensorType::kFloat16 && type != TensorType::kBFloat16) {
    return false;
  }
  // Position 0 is an io tensor of every op and picks T for the others.
  return position == 0 || type == types[0];
}

TensorType io_type(OpKind op, const TensorType* input_types, int32_t count) {
  const std::vector<TypeSlot>& slots = type_slots(op);
  const std::vector<TensorSpec>& specs = input_specs(op);
  if (count != static_cast<int32_t>(specs.size())) {
    throw DataTypeError(std::string(op_name(op)) + ": expects " + std::to_string(specs.size()) +
                        " input types, got " + std::to_string(count));
  }
  const TensorType io = input_types[0];
  if (io != TensorType::kFloat32 && io != TensorType::kFloat16 && io != TensorType::kBFloat16) {
    throw DataTypeError(std::string(op_name(op)) + ": input " + specs[0].name + " is " + type_name(io) +
                        "; the kernels take float32, float16 or bfloat16");
  }
  for (size_t i = 1; i < specs.size(); ++i) {
    const bool fp32_only = slots[i] == TypeSlot::kFloat32;
    const TensorType expected = fp32_only ? TensorType::kFloat32 : io;
    if (input_types[i] != expected) {
      throw DataTypeError(std::string(op_name(op)) + ": input " + specs[i].name + " is " +
                          type_name(input_types[i]) + " but must be " + type_name(expected) +
                          (fp32_only ? " whatever the io type" : std::string(" like ") + specs[0].name));
    }
  }
  return io;
}

const char* type_name(TensorType type) {
  switch (type) {
    case TensorType::kFloat32: return "float32";
    case TensorType::kFloat16: return "float16";
    case TensorType::kBFloat16: return "bfloat16";
    case TensorType::kOther: break;
  }
  return "a type other than float32, float16 and bfloat16";
}

SelectiveScanSizes selective_scan_sizes(const std::vector<Shape>& inputs) {
  check_input_shapes(OpKind::kSelectiveScan, Attributes{}, inputs);
  require_concrete(OpKind::kSelectiveScan, inputs);
  return {inputs[kU][0], inputs[kU][1], inputs[kB][1], inputs[kA][1], inputs[kU][2]};
}

CrossSizes cross_sizes(OpKind op, const Attributes& attributes, const std::vector<Shape>& inputs) {
  check_input_shapes(op, attributes, inputs);
  require_concrete(op, inputs);
  const Shape& in = inputs[0];
  if (op == OpKind::kCrossScan) return {in[0], in[1], in[2], in[3], kRoutes};
  return {in[0], in[2], attributes.height, attributes.width, in[1]};
}

size_t cross_workspace_bytes(OpKind op, int64_t routes, int64_t length, int64_t merge_kernel_bytes) {
  if (op == OpKind::kSelectiveScan) throw ShapeError("VmddpmSelectiveScan needs no workspace layout");
  if (routes < 1 || length < 1) {
    throw ShapeError(std::string(op_name(op)) + ": workspace for routes " + std::to_string(routes) +
                     " and length " + std::to_string(length) + " (both must be positive)");
  }
  if (op == OpKind::kCrossScan) return 0;
  if (merge_kernel_bytes < 0) {
    throw ShapeError("VmddpmCrossMerge: the kernel library rejected routes " + std::to_string(routes) +
                     " and length " + std::to_string(length) + " for its workspace");
  }
  return static_cast<size_t>(merge_kernel_bytes);
}

}  // namespace vmddpm::plugin_core

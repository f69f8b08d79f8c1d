// Shapes, types and workspace of the three plugins, without TensorRT: the contract of
// docs/design.md section 2 as the plugins enforce it.
//
// Shapes use kDynamicDim for an extent not known yet (a TensorRT dynamic dimension at build
// time); checks compare only extents known on both sides, so the same function serves
// getOutputShapes (build time, symbolic batch), configurePlugin and onShapeChange (run time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "attributes.h"

namespace vmddpm::plugin_core {

constexpr int64_t kDynamicDim = -1;
using Shape = std::vector<int64_t>;

// Output extent = constant * product of input extents inputs[input][axis]: the form every rule
// here takes, and one the TensorRT adapter can build with IExprBuilder (constant, kPROD).
struct DimFactor {
  int32_t input;
  int32_t axis;
};
struct DimRule {
  int64_t constant = 1;
  std::vector<DimFactor> factors;
};
using ShapeRule = std::vector<DimRule>;  // one DimRule per output axis

ShapeRule output_shape_rule(OpKind op, const Attributes& attributes);

// The rule on concrete extents: kDynamicDim where a factor is dynamic.
Shape evaluate_shape_rule(const ShapeRule& rule, const std::vector<Shape>& inputs);

// Throws ShapeError (naming the op, the tensors and the extents) for a wrong input count or
// rank, or known extents that contradict each other or the attributes.
void check_input_shapes(OpKind op, const Attributes& attributes, const std::vector<Shape>& inputs);

// check_input_shapes, then evaluate_shape_rule.
Shape output_shape(OpKind op, const Attributes& attributes, const std::vector<Shape>& inputs);

// io types; the first three carry their vmddpm_dtype codes (plugins/ops/include/vmddpm/ops.h).
enum class TensorType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kOther = 3 };

// What each tensor of an op may be: the op's io type T (fp32, fp16 or bf16, the same for all
// such tensors) or always fp32 (A, D, delta_bias).
enum class TypeSlot : int32_t { kIo = 0, kFloat32 = 1 };

// Inputs in order, then the output.
const std::vector<TypeSlot>& type_slots(OpKind op);

// Whether tensor `position` (inputs, then the output) may have types[position] in linear
// layout or not, given the choices types[0..position-1] already made: TensorRT's
// supportsFormatCombination question.
bool supports_combination(OpKind op, int32_t position, const TensorType* types, bool linear);

// The io type T of `count` input types, which is also the output's type. Throws DataTypeError
// (naming the input) unless the types are a combination supports_combination accepts.
TensorType io_type(OpKind op, const TensorType* input_types, int32_t count);

// "float32", "float16", "bfloat16", for messages.
const char* type_name(TensorType type);

// The kernels' size arguments. Both check the shapes (check_input_shapes) and that every extent
// is known (ShapeError otherwise).
struct SelectiveScanSizes {
  int64_t batch, channels, routes, state, length;
};
SelectiveScanSizes selective_scan_sizes(const std::vector<Shape>& inputs);

struct CrossSizes {
  int64_t batch, dim, height, width, routes;
};
CrossSizes cross_sizes(OpKind op, const Attributes& attributes, const std::vector<Shape>& inputs);

// Bytes of device workspace a cross op needs: none for VmddpmCrossScan, the kernel's own (its
// inverted table, vmddpm_cross_merge_cuda_workspace_bytes, passed in so this code needs no kernel
// library) for VmddpmCrossMerge. The scan table itself lives in device memory the plugin owns,
// uploaded once per shape, not in the workspace (TensorRT reuses workspace between layers).
size_t cross_workspace_bytes(OpKind op, int64_t routes, int64_t length, int64_t merge_kernel_bytes);

}  // namespace vmddpm::plugin_core

#include "plugins.h"

#include <cuda_runtime_api.h>

#include <array>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <utility>

#include "errors.h"
#include "logging.h"
#include "trt_types.h"
#include "vmddpm/ops.h"

namespace vmddpm::trt {
namespace core = plugin_core;
namespace {

static_assert(static_cast<int>(core::TensorType::kFloat32) == VMDDPM_DTYPE_FLOAT32 &&
                  static_cast<int>(core::TensorType::kFloat16) == VMDDPM_DTYPE_FLOAT16 &&
                  static_cast<int>(core::TensorType::kBFloat16) == VMDDPM_DTYPE_BFLOAT16,
              "plugin_core's io types must carry their vmddpm_dtype codes");

// Most tensors any of the ops has (VmddpmSelectiveScan: seven inputs and its output).
constexpr int32_t kMaxTensors = 8;

void require_counts(core::OpKind op, int32_t inputs, int32_t outputs) {
  if (inputs != core::input_count(op) || outputs != 1) {
    throw std::invalid_argument("expects " + std::to_string(core::input_count(op)) + " inputs and 1 output, got " +
                                std::to_string(inputs) + " and " + std::to_string(outputs));
  }
}

template <typename Desc, typename DimsOf>
std::vector<core::Shape> shapes_of(const Desc* descs, int32_t count, DimsOf dims_of) {
  std::vector<core::Shape> shapes;
  for (int32_t i = 0; i < count; ++i) shapes.push_back(to_core(dims_of(descs[i])));
  return shapes;
}

bool same_dims(const nvinfer1::Dims& a, const nvinfer1::Dims& b) {
  if (a.nbDims != b.nbDims) return false;
  for (int32_t axis = 0; axis < a.nbDims; ++axis) {
    if (a.d[axis] != b.d[axis]) return false;
  }
  return true;
}

}  // namespace

VmddpmPlugin::VmddpmPlugin(core::OpKind op, std::string name, const core::Attributes& attributes)
    : op_(op), name_(std::move(name)), attributes_(attributes) {}

VmddpmPlugin::VmddpmPlugin(const VmddpmPlugin& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuild(other),
      nvinfer1::IPluginV3OneRuntime(other),
      op_(other.op_),
      name_(other.name_),
      attributes_(other.attributes_),
      dtype_(other.dtype_),
      batch_(other.batch_),
      announced_(other.announced_) {}

std::string VmddpmPlugin::where() const { return std::string(core::op_name(op_)) + " '" + name_ + "'"; }

template <typename Body>
int32_t VmddpmPlugin::guarded(const char* method, Body&& body) const noexcept {
  // Copied out of the exception, which dies with its handler; a fixed buffer cannot throw.
  char failure[1024] = "unexpected non-standard exception";
  try {
    body();
    return 0;
  } catch (const std::exception& error) {
    std::snprintf(failure, sizeof failure, "%s", error.what());
  } catch (...) {
  }
  try {
    // Core messages start with the op name, which where() already gives.
    std::string message = failure;
    const std::string prefix = std::string(core::op_name(op_)) + ": ";
    if (message.compare(0, prefix.size(), prefix) == 0) message.erase(0, prefix.size());
    log_error(where() + " " + method + ": " + message);
  } catch (...) {
    // Out of memory while building the message: TensorRT still sees the failure status.
  }
  return -1;
}

template <typename Plugin>
nvinfer1::IPluginV3* VmddpmPlugin::copy_of(const Plugin& plugin) const noexcept {
  nvinfer1::IPluginV3* copy = nullptr;
  guarded("clone", [&] { copy = new Plugin(plugin); });
  return copy;
}

nvinfer1::IPluginCapability* VmddpmPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

const char* VmddpmPlugin::getPluginName() const noexcept { return core::op_name(op_); }
const char* VmddpmPlugin::getPluginVersion() const noexcept { return core::kPluginVersion; }
const char* VmddpmPlugin::getPluginNamespace() const noexcept { return core::kPluginNamespace; }

int32_t VmddpmPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                      const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept {
  return guarded("configurePlugin", [&] {
    require_counts(op_, nbInputs, nbOutputs);
    (void)out;
    core::check_input_shapes(op_, attributes_,
                             shapes_of(in, nbInputs, [](const auto& d) -> const nvinfer1::Dims& { return d.desc.dims; }));
    std::array<core::TensorType, kMaxTensors> types{};
    for (int32_t i = 0; i < nbInputs; ++i) types[i] = to_core(in[i].desc.type);
    core::io_type(op_, types.data(), nbInputs);
  });
}

int32_t VmddpmPlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                                         const nvinfer1::DataType* inputTypes, int32_t nbInputs) const noexcept {
  return guarded("getOutputDataTypes", [&] {
    require_counts(op_, nbInputs, nbOutputs);
    std::array<core::TensorType, kMaxTensors> types{};
    for (int32_t i = 0; i < nbInputs; ++i) types[i] = to_core(inputTypes[i]);
    outputTypes[0] = to_trt(core::io_type(op_, types.data(), nbInputs));
  });
}

int32_t VmddpmPlugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                                      const nvinfer1::DimsExprs* shapeInputs, int32_t nbShapeInputs,
                                      nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                      nvinfer1::IExprBuilder& exprBuilder) noexcept {
  return guarded("getOutputShapes", [&] {
    require_counts(op_, nbInputs, nbOutputs);
    (void)shapeInputs;
    if (nbShapeInputs != 0) throw std::invalid_argument("takes no shape inputs, got " + std::to_string(nbShapeInputs));
    // Build-time extents: constants where the network fixes them, dynamic (the batch) elsewhere.
    std::vector<core::Shape> shapes;
    for (int32_t i = 0; i < nbInputs; ++i) {
      core::Shape shape;
      for (int32_t axis = 0; axis < inputs[i].nbDims; ++axis) {
        const nvinfer1::IDimensionExpr* extent = inputs[i].d[axis];
        shape.push_back(extent->isConstant() ? extent->getConstantValue() : core::kDynamicDim);
      }
      shapes.push_back(std::move(shape));
    }
    core::check_input_shapes(op_, attributes_, shapes);
    // Each output extent is constant * the product of input extents: the same expression in
    // TensorRT's terms, so a dynamic batch stays symbolic.
    const core::ShapeRule rule = core::output_shape_rule(op_, attributes_);
    outputs[0].nbDims = static_cast<int32_t>(rule.size());
    for (size_t axis = 0; axis < rule.size(); ++axis) {
      const nvinfer1::IDimensionExpr* extent = nullptr;
      for (const core::DimFactor& factor : rule[axis].factors) {
        const nvinfer1::IDimensionExpr* term = inputs[factor.input].d[factor.axis];
        extent = extent == nullptr ? term : exprBuilder.operation(nvinfer1::DimensionOperation::kPROD, *extent, *term);
      }
      if (extent == nullptr || rule[axis].constant != 1) {
        const nvinfer1::IDimensionExpr* constant = exprBuilder.constant(rule[axis].constant);
        extent = extent == nullptr ? constant
                                   : exprBuilder.operation(nvinfer1::DimensionOperation::kPROD, *constant, *extent);
      }
      if (extent == nullptr) throw std::runtime_error("TensorRT's expression builder returned no expression");
      outputs[0].d[axis] = extent;
    }
  });
}

bool VmddpmPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                             int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != core::input_count(op_) || nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs) return false;
  // TensorRT asks position by position and has fixed only positions 0..pos so far.
  std::array<core::TensorType, kMaxTensors> types{};
  for (int32_t i = 0; i <= pos; ++i) types[i] = to_core(inOut[i].desc.type);
  return core::supports_combination(op_, pos, types.data(),
                                    inOut[pos].desc.format == nvinfer1::TensorFormat::kLINEAR);
}

size_t VmddpmPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                      const nvinfer1::DynamicPluginTensorDesc* outputs,
                                      int32_t nbOutputs) const noexcept {
  size_t bytes = 0;
  // No error channel here: a failure is logged and configurePlugin has refused the same shapes.
  guarded("getWorkspaceSize", [&] {
    require_counts(op_, nbInputs, nbOutputs);
    (void)outputs;
    bytes = workspace_bytes(shapes_of(inputs, nbInputs, [](const auto& d) -> const nvinfer1::Dims& { return d.max; }));
  });
  return bytes;
}

int32_t VmddpmPlugin::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                                    const nvinfer1::PluginTensorDesc* out, int32_t nbOutputs) noexcept {
  announced_.clear();  // until these shapes are accepted, enqueue refuses to run
  return guarded("onShapeChange", [&] {
    require_counts(op_, nbInputs, nbOutputs);
    (void)out;
    const std::vector<core::Shape> shapes =
        shapes_of(in, nbInputs, [](const auto& d) -> const nvinfer1::Dims& { return d.dims; });
    std::array<core::TensorType, kMaxTensors> types{};
    for (int32_t i = 0; i < nbInputs; ++i) types[i] = to_core(in[i].type);
    const core::TensorType io = core::io_type(op_, types.data(), nbInputs);
    prepare(shapes);  // checks the shapes, sizes the kernels
    dtype_ = static_cast<int>(io);  // TensorType's io codes are vmddpm_dtype's
    batch_ = shapes[0][0];
    std::vector<nvinfer1::Dims> announced;
    for (int32_t i = 0; i < nbInputs; ++i) announced.push_back(in[i].dims);
    announced_ = std::move(announced);
  });
}

int32_t VmddpmPlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                              const void* const* inputs, void* const* outputs, void* workspace,
                              cudaStream_t stream) noexcept {
  (void)outputDesc;
  // The kernel sizes come from onShapeChange; running on other shapes would read out of bounds.
  // Compared without allocating: enqueue runs in every inference, possibly inside graph capture.
  bool announced = !announced_.empty();
  for (size_t i = 0; announced && i < announced_.size(); ++i) announced = same_dims(inputDesc[i].dims, announced_[i]);
  try {
    if (!announced) {
      log_error(where() + " enqueue: called with input shapes that onShapeChange did not accept");
      return -1;
    }
    if (batch_ == 0) return 0;  // nothing to compute; the kernels refuse empty batches
    const std::string error = launch(inputs, outputs, workspace, stream);
    if (error.empty()) return 0;
    log_error(where() + " enqueue: " + error);
  } catch (...) {
    // Only building a failure's message can throw (out of memory); the failure stands.
  }
  return -1;
}

nvinfer1::IPluginV3* VmddpmPlugin::attachToContext(nvinfer1::IPluginResourceContext* context) noexcept {
  (void)context;  // the plugins hold no per-context resource
  return clone();
}

const nvinfer1::PluginFieldCollection* VmddpmPlugin::getFieldsToSerialize() noexcept {
  const int32_t status = guarded("getFieldsToSerialize", [&] {
    serialized_ = std::make_unique<core::SerializedFields>(op_, attributes_);
    fields_.clear();
    for (int32_t i = 0; i < serialized_->size(); ++i) fields_.push_back(to_trt(serialized_->data()[i]));
    collection_.nbFields = static_cast<int32_t>(fields_.size());
    collection_.fields = fields_.data();
  });
  return status == 0 ? &collection_ : nullptr;
}

// --- VmddpmSelectiveScan -------------------------------------------------------------------------

SelectiveScanPlugin::SelectiveScanPlugin(std::string name, const core::Attributes& attributes)
    : VmddpmPlugin(kOp, std::move(name), attributes) {}

nvinfer1::IPluginV3* SelectiveScanPlugin::clone() noexcept { return copy_of(*this); }

void SelectiveScanPlugin::prepare(const std::vector<core::Shape>& inputs) {
  sizes_ = core::selective_scan_sizes(inputs);
}

std::string SelectiveScanPlugin::launch(const void* const* inputs, void* const* outputs, void*,
                                        cudaStream_t stream) {
  const int status = vmddpm_selective_scan_cuda(
      inputs[0], inputs[1], static_cast<const float*>(inputs[2]), inputs[3], inputs[4],
      static_cast<const float*>(inputs[5]), static_cast<const float*>(inputs[6]), outputs[0], sizes_.batch,
      sizes_.channels, sizes_.routes, sizes_.state, sizes_.length, dtype_, attributes_.delta_softplus ? 1 : 0, stream);
  return status == VMDDPM_OK ? std::string() : std::string(vmddpm_last_error());
}

// --- the cross ops ---------------------------------------------------------------------------------

CrossPlugin::CrossPlugin(core::OpKind op, std::string name, const core::Attributes& attributes)
    : VmddpmPlugin(op, std::move(name), attributes) {}

size_t CrossPlugin::workspace_bytes_for(int64_t length) const {
  const int64_t kernel_bytes =
      op_ == core::OpKind::kCrossMerge ? vmddpm_cross_merge_cuda_workspace_bytes(core::kRoutes, length) : 0;
  return core::cross_workspace_bytes(op_, core::kRoutes, length, kernel_bytes);
}

void CrossPlugin::prepare(const std::vector<core::Shape>& inputs) {
  sizes_ = core::cross_sizes(op_, attributes_, inputs);
  workspace_bytes_for(sizes_.height * sizes_.width);  // the kernel library accepts this length
  // Looked up at each shape change: the current device may differ from the last one's.
  table_ = DeviceScanTable::acquire(attributes_.scan_order, sizes_.height, sizes_.width);
}

size_t CrossPlugin::workspace_bytes(const std::vector<core::Shape>& max_inputs) const {
  const core::CrossSizes largest = core::cross_sizes(op_, attributes_, max_inputs);
  return workspace_bytes_for(largest.height * largest.width);
}

CrossScanPlugin::CrossScanPlugin(std::string name, const core::Attributes& attributes)
    : CrossPlugin(kOp, std::move(name), attributes) {}

nvinfer1::IPluginV3* CrossScanPlugin::clone() noexcept { return copy_of(*this); }

std::string CrossScanPlugin::launch(const void* const* inputs, void* const* outputs, void* workspace,
                                    cudaStream_t stream) {
  (void)workspace;
  const int status = vmddpm_cross_scan_cuda(inputs[0], table_->data(), outputs[0], sizes_.batch, sizes_.dim,
                                            sizes_.height, sizes_.width, sizes_.routes, dtype_, stream);
  return status == VMDDPM_OK ? std::string() : std::string(vmddpm_last_error());
}

CrossMergePlugin::CrossMergePlugin(std::string name, const core::Attributes& attributes)
    : CrossPlugin(kOp, std::move(name), attributes) {}

nvinfer1::IPluginV3* CrossMergePlugin::clone() noexcept { return copy_of(*this); }

std::string CrossMergePlugin::launch(const void* const* inputs, void* const* outputs, void* workspace,
                                     cudaStream_t stream) {
  const int status =
      vmddpm_cross_merge_cuda(inputs[0], table_->data(), outputs[0], workspace, sizes_.batch,
                              sizes_.dim, sizes_.height, sizes_.width, sizes_.routes, dtype_, stream);
  return status == VMDDPM_OK ? std::string() : std::string(vmddpm_last_error());
}

}  // namespace vmddpm::trt

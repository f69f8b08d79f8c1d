// The three TensorRT plugins as IPluginV3 (IPluginV3OneCore, IPluginV3OneBuild,
// IPluginV3OneRuntime). They are thin: attributes, shape rules, type table, serialized fields
// and workspace layout come from plugin_core (TensorRT-free, unit-tested), the math from the
// CUDA kernels behind plugins/ops/include/vmddpm/ops.h. What is left here is TensorRT's calling
// convention: no exception crosses a noexcept method (failures are logged and returned as
// non-zero), and enqueue neither allocates nor synchronises.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "NvInferRuntime.h"
#include "attributes.h"
#include "op_rules.h"
#include "device_scan_table.h"

namespace vmddpm::trt {

class VmddpmPlugin : public nvinfer1::IPluginV3,
                     public nvinfer1::IPluginV3OneCore,
                     public nvinfer1::IPluginV3OneBuild,
                     public nvinfer1::IPluginV3OneRuntime {
 public:
  ~VmddpmPlugin() override = default;
  VmddpmPlugin& operator=(const VmddpmPlugin&) = delete;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, const nvinfer1::DataType* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, const nvinfer1::DimsExprs* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t getNbOutputs() const noexcept override { return 1; }
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nbOutputs) const noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs, const nvinfer1::PluginTensorDesc* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

 protected:
  // `name` is the layer's (the ONNX node's) name, for messages.
  VmddpmPlugin(plugin_core::OpKind op, std::string name, const plugin_core::Attributes& attributes);
  // Copies the configuration and the shapes last announced, so a clone can enqueue at once.
  VmddpmPlugin(const VmddpmPlugin& other);

  // onShapeChange's op-specific part, on checked concrete shapes: size the kernel call.
  virtual void prepare(const std::vector<plugin_core::Shape>& inputs) = 0;
  // enqueue's op-specific part: the kernel calls for the shapes prepare() saw. Returns "" when
  // they were enqueued, else why not (an empty std::string does not allocate).
  virtual std::string launch(const void* const* inputs, void* const* outputs, void* workspace,
                             cudaStream_t stream) = 0;
  // Bytes of workspace for inputs of at most these shapes.
  virtual size_t workspace_bytes(const std::vector<plugin_core::Shape>& max_inputs) const = 0;

  // "VmddpmCrossMerge 'node_17'": how messages name this plugin.
  std::string where() const;

  // Runs `body` for TensorRT method `method`: 0, or -1 with the exception's message logged.
  template <typename Body>
  int32_t guarded(const char* method, Body&& body) const noexcept;

  // clone() of a plugin of type Plugin: a copy, or nullptr (logged) when copying its name,
  // attributes or shapes throws, which must not leave the noexcept clone().
  template <typename Plugin>
  nvinfer1::IPluginV3* copy_of(const Plugin& plugin) const noexcept;

  const plugin_core::OpKind op_;
  const std::string name_;
  const plugin_core::Attributes attributes_;
  int dtype_ = 0;  // vmddpm_dtype of the io tensors, set by onShapeChange
  int64_t batch_ = 0;

 private:
  std::vector<nvinfer1::Dims> announced_;  // input shapes of the last onShapeChange
  // getFieldsToSerialize's storage, rebuilt at each call.
  std::unique_ptr<plugin_core::SerializedFields> serialized_;
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

class SelectiveScanPlugin final : public VmddpmPlugin {
 public:
  static constexpr plugin_core::OpKind kOp = plugin_core::OpKind::kSelectiveScan;
  SelectiveScanPlugin(std::string name, const plugin_core::Attributes& attributes);
  nvinfer1::IPluginV3* clone() noexcept override;

 private:
  void prepare(const std::vector<plugin_core::Shape>& inputs) override;
  std::string launch(const void* const* inputs, void* const* outputs, void* workspace,
                     cudaStream_t stream) override;
  size_t workspace_bytes(const std::vector<plugin_core::Shape>&) const override { return 0; }

  plugin_core::SelectiveScanSizes sizes_{};
};

// The cross ops' shared part: the scan table, kept in device memory per (order, height, width)
// from onShapeChange on (DeviceScanTable), so enqueue only launches the kernel.
class CrossPlugin : public VmddpmPlugin {
 protected:
  CrossPlugin(plugin_core::OpKind op, std::string name, const plugin_core::Attributes& attributes);
  CrossPlugin(const CrossPlugin& other) = default;

  void prepare(const std::vector<plugin_core::Shape>& inputs) override;
  size_t workspace_bytes(const std::vector<plugin_core::Shape>& max_inputs) const override;

  plugin_core::CrossSizes sizes_{};
  std::shared_ptr<const DeviceScanTable> table_;

 private:
  size_t workspace_bytes_for(int64_t length) const;
};

class CrossScanPlugin final : public CrossPlugin {
 public:
  static constexpr plugin_core::OpKind kOp = plugin_core::OpKind::kCrossScan;
  CrossScanPlugin(std::string name, const plugin_core::Attributes& attributes);
  nvinfer1::IPluginV3* clone() noexcept override;

 private:
  std::string launch(const void* const* inputs, void* const* outputs, void* workspace,
                     cudaStream_t stream) override;
};

class CrossMergePlugin final : public CrossPlugin {
 public:
  static constexpr plugin_core::OpKind kOp = plugin_core::OpKind::kCrossMerge;
  CrossMergePlugin(std::string name, const plugin_core::Attributes& attributes);
  nvinfer1::IPluginV3* clone() noexcept override;

 private:
  std::string launch(const void* const* inputs, void* const* outputs, void* workspace,
                     cudaStream_t stream) override;
};

}  // namespace vmddpm::trt

// One IPluginCreatorV3One per plugin, and the list both registration libraries hand TensorRT.
#pragma once

#include <cstdint>
#include <vector>

#include "NvInferRuntime.h"
#include "attributes.h"

namespace vmddpm::trt {

// Creates `Plugin` (SelectiveScanPlugin, CrossScanPlugin, CrossMergePlugin) from the ONNX node's
// attributes (the parser passes the fields getFieldNames advertises) or from the fields an engine
// serialised (getFieldsToSerialize); plugin_core::parse_attributes reads both.
template <typename Plugin>
class PluginCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  PluginCreator();
  PluginCreator(const PluginCreator&) = delete;
  PluginCreator& operator=(const PluginCreator&) = delete;

  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &collection_; }
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override { return plugin_core::kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return plugin_core::kPluginNamespace; }

 private:
  std::vector<nvinfer1::PluginField> field_names_;
  nvinfer1::PluginFieldCollection collection_{};
};

// The three creators, built on first use and alive until the library is unloaded.
nvinfer1::IPluginCreatorInterface* const* all_creators(int32_t& count) noexcept;

}  // namespace vmddpm::trt

#include "creators.h"

#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "logging.h"
#include "plugins.h"
#include "trt_types.h"

namespace vmddpm::trt {
namespace core = plugin_core;

template <typename Plugin>
PluginCreator<Plugin>::PluginCreator() {
  for (const core::FieldSpec& spec : core::field_specs(Plugin::kOp)) {
    // The parser reads the node's attribute `name` in type `type`; no data: it is a declaration.
    field_names_.emplace_back(spec.name, nullptr, static_cast<nvinfer1::PluginFieldType>(spec.type), 1);
  }
  collection_.nbFields = static_cast<int32_t>(field_names_.size());
  collection_.fields = field_names_.data();
}

template <typename Plugin>
const char* PluginCreator<Plugin>::getPluginName() const noexcept {
  return core::op_name(Plugin::kOp);
}

template <typename Plugin>
nvinfer1::IPluginV3* PluginCreator<Plugin>::createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                                         nvinfer1::TensorRTPhase phase) noexcept {
  // The same object serves both phases: what the runtime needs is all in the attributes.
  (void)phase;
  const char* layer = name != nullptr ? name : "";
  // Copied out of the exception, which dies with its handler; a fixed buffer cannot throw.
  char failure[1024] = "unexpected non-standard exception";
  try {
    std::vector<core::FieldView> fields;
    const int32_t count = fc != nullptr ? fc->nbFields : 0;
    for (int32_t i = 0; i < count; ++i) fields.push_back(to_core(fc->fields[i]));
    const core::Attributes attributes = core::parse_attributes(Plugin::kOp, fields.data(), count);
    return new Plugin(layer, attributes);
  } catch (const std::exception& error) {
    std::snprintf(failure, sizeof failure, "%s", error.what());
  } catch (...) {
  }
  try {
    log_error(std::string("cannot create layer '") + layer + "': " + failure);
  } catch (...) {
    // Out of memory while building the message: TensorRT still sees no plugin.
  }
  return nullptr;
}

nvinfer1::IPluginCreatorInterface* const* all_creators(int32_t& count) noexcept {
  static PluginCreator<SelectiveScanPlugin> selective_scan;
  static PluginCreator<CrossScanPlugin> cross_scan;
  static PluginCreator<CrossMergePlugin> cross_merge;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&selective_scan, &cross_scan, &cross_merge};
  count = static_cast<int32_t>(sizeof creators / sizeof creators[0]);
  return creators;
}

}  // namespace vmddpm::trt

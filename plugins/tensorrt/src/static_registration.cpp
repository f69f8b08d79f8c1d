// libvmddpm_trt_plugins_static.so: registers the creators while it is being loaded, for loaders
// that only dlopen the library (ctypes.CDLL, polygraphy --plugins, trtexec --staticPlugins).
//
// This is what REGISTER_TENSORRT_PLUGIN does, except for the namespace: the macro registers under
// "" while the ONNX nodes ask for plugin_namespace "vmddpm", so the registrar passes the creators'
// own namespace.
#include <string>

#include "NvInferRuntime.h"
#include "attributes.h"
#include "creators.h"
#include "logging.h"

namespace {

// No setLoggerFinder call reaches this library: it logs through TensorRT's global logger.
class GlobalLoggerFinder final : public nvinfer1::ILoggerFinder {
 public:
  nvinfer1::ILogger* findLogger() noexcept override { return getLogger(); }
};

struct StaticRegistration {
  StaticRegistration() noexcept {
    static GlobalLoggerFinder finder;
    vmddpm::trt::set_logger_finder(&finder);
    nvinfer1::IPluginRegistry* registry = getPluginRegistry();
    if (registry == nullptr) {
      vmddpm::trt::log_error("TensorRT returned no plugin registry; the plugins are not registered");
      return;
    }
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = vmddpm::trt::all_creators(count);
    for (int32_t i = 0; i < count; ++i) {
      if (!registry->registerCreator(*creators[i], vmddpm::plugin_core::kPluginNamespace)) {
        const auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
        try {
          vmddpm::trt::log(nvinfer1::ILogger::Severity::kWARNING,
                           std::string(creator->getPluginName()) + " is already registered in namespace '" +
                               vmddpm::plugin_core::kPluginNamespace +
                               "' (is libvmddpm_trt_plugins.so loaded too?); keeping the first registration");
        } catch (...) {
          // Out of memory while loading: the registration outcome stands without a message.
        }
      }
    }
  }
};

const StaticRegistration registration;

}  // namespace

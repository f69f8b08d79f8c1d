// libvmddpm_trt_plugins.so's entry points for IPluginRegistry::loadLibrary (TensorRT's "plugin
// shared library" convention): the registry calls setLoggerFinder, then getCreators, and registers
// what it returns. Nothing registers at load time, so loadLibrary never meets a duplicate.
#include "NvInferRuntime.h"
#include "creators.h"
#include "logging.h"

// TensorRT's own TENSORRTAPI is empty outside TensorRT's build; the library is built with hidden
// visibility, so the entry points say so themselves (and src/exports.map lists them).
#define VMDDPM_TRT_ENTRY_POINT extern "C" __attribute__((visibility("default")))

VMDDPM_TRT_ENTRY_POINT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept {
  vmddpm::trt::set_logger_finder(finder);
}

VMDDPM_TRT_ENTRY_POINT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept {
  return vmddpm::trt::all_creators(nbCreators);
}

// The IPluginCreator (IPluginV2) list of the same convention. The vmddpm plugins are IPluginV3
// only, so it is empty; TensorRT 10 takes them from getCreators.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
VMDDPM_TRT_ENTRY_POINT nvinfer1::IPluginCreator* const* getPluginCreators(int32_t& nbCreators) noexcept {
  static nvinfer1::IPluginCreator* const none[1] = {nullptr};
  nbCreators = 0;
  return none;
}
#pragma GCC diagnostic pop

// Where the plugins' messages go: TensorRT's logger once TensorRT handed us a logger finder
// (setLoggerFinder, called by IPluginRegistry::loadLibrary), standard error before that or when
// the finder is not one this library can call (logging.cpp: TensorRT 10 and 11 lay it out apart).
#pragma once

#include <string>

#include "NvInferRuntime.h"

namespace vmddpm::trt {

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept;

void log(nvinfer1::ILogger::Severity severity, const std::string& message) noexcept;

inline void log_error(const std::string& message) noexcept { log(nvinfer1::ILogger::Severity::kERROR, message); }

}  // namespace vmddpm::trt

#include "logging.h"

#include <atomic>
#include <cstdio>

namespace vmddpm::trt {
namespace {
std::atomic<nvinfer1::ILoggerFinder*> logger_finder{nullptr};
}  // namespace

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept { logger_finder.store(finder); }

void log(nvinfer1::ILogger::Severity severity, const std::string& message) noexcept {
  try {
    const std::string line = "vmddpm plugins: " + message;
    // Asked each time: TensorRT may swap the logger between builders and runtimes.
    nvinfer1::ILoggerFinder* finder = logger_finder.load();
    nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
    if (logger != nullptr) {
      logger->log(severity, line.c_str());
      return;
    }
  } catch (...) {
    // No memory for the line, or a finder that threw: standard error below still tells.
  }
  if (severity <= nvinfer1::ILogger::Severity::kWARNING) std::fprintf(stderr, "vmddpm plugins: %s\n", message.c_str());
}

}  // namespace vmddpm::trt

#include "logging.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>

// The library is built against one TensorRT's headers (10.x in CI) and loaded into TensorRT 10 or
// 11. The plugin interfaces it implements keep their layout across the two, but the logger finder
// TensorRT hands to setLoggerFinder does not: in TensorRT 11, ILoggerFinder and ILogger derive
// from IVersionedInterface, so their virtual tables start with getAPILanguage, getInterfaceInfo
// and the destructor, and findLogger / log come after them. Called through the other major's
// layout, findLogger would run getAPILanguage (or a destructor). So the finder's layout is taken
// from the TensorRT library that defines it (the one its virtual table lives in), which says its
// major version through getInferLibMajorVersion; objects from anything else are taken to have the
// layout of the headers this library was built with.
namespace vmddpm::trt {

using Severity = nvinfer1::ILogger::Severity;

// Outside an anonymous namespace: no class here derives from these, and a compiler that sees
// every class of an internal type would otherwise turn the calls into pure-virtual calls.
namespace tensorrt_layouts {

// TensorRT 10's ILogger / ILoggerFinder: findLogger and log are the first virtual functions.
class LoggerV10 {
 public:
  virtual void log(Severity severity, const char* message) noexcept = 0;

 protected:
  virtual ~LoggerV10() = default;
};

class LoggerFinderV10 {
 public:
  virtual LoggerV10* findLogger() = 0;

 protected:
  virtual ~LoggerFinderV10() = default;
};

// TensorRT 11's: IVersionedInterface first (whose layout both majors share).
class LoggerV11 : public nvinfer1::IVersionedInterface {
 public:
  virtual void log(Severity severity, const char* message) noexcept = 0;

 protected:
  ~LoggerV11() noexcept override = default;
};

class LoggerFinderV11 : public nvinfer1::IVersionedInterface {
 public:
  virtual LoggerV11* findLogger() = 0;

 protected:
  ~LoggerFinderV11() noexcept override = default;
};

}  // namespace tensorrt_layouts

namespace {

using tensorrt_layouts::LoggerFinderV10;
using tensorrt_layouts::LoggerFinderV11;
using tensorrt_layouts::LoggerV10;
using tensorrt_layouts::LoggerV11;

enum Layout : std::uintptr_t { kNone = 0, kV10 = 1, kV11 = 2 };

constexpr Layout kHeaderLayout = NV_TENSORRT_MAJOR >= 11 ? kV11 : kV10;

// The finder and its layout in one word (objects with a virtual table are at least 4-aligned), so
// a log call never pairs one finder with another's layout.
std::atomic<std::uintptr_t> logger_finder{0};

bool is_interface(const nvinfer1::IVersionedInterface& object, const char* kind) noexcept {
  const nvinfer1::InterfaceInfo info = object.getInterfaceInfo();
  return info.kind != nullptr && std::strcmp(info.kind, kind) == 0 && info.major == 1;
}

// The major version of the TensorRT library that defines `object`'s class; 0 when that library is
// not TensorRT (or says no version).
int32_t tensorrt_major_defining(const void* object) noexcept {
  // The first word of a polymorphic object points into its class's virtual table.
  const void* vtable = *static_cast<const void* const*>(object);
  Dl_info info{};
  if (dladdr(vtable, &info) == 0 || info.dli_fname == nullptr || info.dli_fname[0] == '\0') return 0;
  void* library = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (library == nullptr) return 0;
  int32_t major = 0;
  if (void* symbol = dlsym(library, "getInferLibMajorVersion")) {
    major = reinterpret_cast<int32_t (*)()>(symbol)();
  } else if (void* symbol = dlsym(library, "getInferLibVersion")) {  // before 10.x had the major alone
    major = reinterpret_cast<int32_t (*)()>(symbol)() / 10000;
  }
  dlclose(library);
  return major;
}

}  // namespace

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept {
  Layout layout = kNone;
  if (finder != nullptr) {
    const int32_t major = tensorrt_major_defining(finder);
    layout = major >= 11 ? kV11 : major == 10 ? kV10 : kHeaderLayout;
    // A versioned finder says what it is; one that does not say ILoggerFinder is not used.
    if (layout == kV11 && !is_interface(*reinterpret_cast<LoggerFinderV11*>(finder), "ILoggerFinder")) {
      layout = kNone;
      std::fprintf(stderr, "vmddpm plugins: TensorRT %d handed over a logger finder that is no ILoggerFinder 1.x; "
                   "messages go to standard error\n", static_cast<int>(major));
    }
  }
  logger_finder.store(layout == kNone ? 0 : (reinterpret_cast<std::uintptr_t>(finder) | layout));
}

void log(Severity severity, const std::string& message) noexcept {
  try {
    const std::string line = "vmddpm plugins: " + message;
    // Asked each time: TensorRT may swap the logger between builders and runtimes.
    const std::uintptr_t word = logger_finder.load();
    const std::uintptr_t layout = word & 3U;
    if (layout == kV10) {
      if (LoggerV10* logger = reinterpret_cast<LoggerFinderV10*>(word & ~std::uintptr_t{3})->findLogger()) {
        logger->log(severity, line.c_str());
        return;
      }
    } else if (layout == kV11) {
      LoggerV11* logger = reinterpret_cast<LoggerFinderV11*>(word & ~std::uintptr_t{3})->findLogger();
      if (logger != nullptr && is_interface(*logger, "ILogger")) {
        logger->log(severity, line.c_str());
        return;
      }
    }
  } catch (...) {
    // No memory for the line, or a finder that threw: standard error below still tells.
  }
  if (severity <= Severity::kWARNING) std::fprintf(stderr, "vmddpm plugins: %s\n", message.c_str());
}

}  // namespace vmddpm::trt

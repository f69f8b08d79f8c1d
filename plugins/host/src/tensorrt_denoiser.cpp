#include "tensorrt_denoiser.h"

#include <cuda_runtime_api.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "NvInferRuntime.h"
#include "../../ops/cpu/half_convert.h"
#include "host_error.h"

namespace vmddpm::host {
namespace {

// The custom ops every plan made from our graphs needs (manifest "custom_ops").
const char* const kPluginOps[] = {"VmddpmSelectiveScan", "VmddpmCrossScan", "VmddpmCrossMerge"};
const char* const kPluginVersion = "1";
const char* const kPluginNamespace = "vmddpm";

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* message) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "tensorrt: " << message << "\n";
    if (severity <= Severity::kERROR) last_error = message;
  }
  std::string last_error;
};

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw HostError(ExitCode::kBackendUnavailable, std::string(what) + " failed: " + cudaGetErrorString(status));
  }
}

size_t element_size(nvinfer1::DataType type) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT: return 4;
    case nvinfer1::DataType::kHALF: return 2;
    case nvinfer1::DataType::kINT64: return 8;
    case nvinfer1::DataType::kINT32: return 4;
    default: return 0;
  }
}

}  // namespace

struct TensorRTDenoiser::State {
  Logger logger;
  std::unique_ptr<nvinfer1::IRuntime> runtime;
  std::unique_ptr<nvinfer1::ICudaEngine> engine;
  std::unique_ptr<nvinfer1::IExecutionContext> context;
  cudaStream_t stream = nullptr;
  void* x_device = nullptr;
  void* t_device = nullptr;
  void* eps_device = nullptr;
  nvinfer1::DataType x_type{}, t_type{}, eps_type{};
  std::string x_name, t_name, eps_name;
  int64_t numel = 0, channels = 0, height = 0, width = 0, min_batch = 0, max_batch = 0;
  std::vector<uint16_t> half_staging;
  std::vector<int32_t> t_staging;

  ~State() {
    // The context and engine go before the stream and buffers they use.
    context.reset();
    engine.reset();
    runtime.reset();
    if (x_device) cudaFree(x_device);
    if (t_device) cudaFree(t_device);
    if (eps_device) cudaFree(eps_device);
    if (stream) cudaStreamDestroy(stream);
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw HostError(ExitCode::kBackendUnavailable,
                    what + (logger.last_error.empty() ? "" : " (TensorRT: " + logger.last_error + ")"));
  }
};

TensorRTDenoiser::TensorRTDenoiser(const Manifest& manifest, const EngineEntry& entry,
                                   const std::filesystem::path& plugin_library)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    throw HostError(ExitCode::kBackendUnavailable, "no CUDA GPU found: TensorRT needs one (use --replay without a GPU)");
  }
  s.runtime.reset(nvinfer1::createInferRuntime(s.logger));
  if (!s.runtime) s.fail("cannot create the TensorRT runtime");

  const std::filesystem::path library =
      plugin_library.empty() ? manifest.export_dir / entry.plugin_library : plugin_library;
  if (!std::filesystem::is_regular_file(library)) {
    throw HostError(ExitCode::kBackendUnavailable, "plugin library " + library.string() +
                                                       " not found; rebuild the engine with `vmddpm-deploy build-engine`");
  }
  nvinfer1::IPluginRegistry& registry = s.runtime->getPluginRegistry();
  if (registry.loadLibrary(library.string().c_str()) == nullptr) {
    s.fail("TensorRT could not load plugin library " + library.string() + " (built for another TensorRT version?)");
  }
  for (const char* op : kPluginOps) {
    if (registry.getCreator(op, kPluginVersion, kPluginNamespace) == nullptr) {
      s.fail(library.string() + " does not provide " + op + " version " + kPluginVersion +
             "; it is from another vmddpm-deploy version: rebuild it");
    }
  }

  // Plans load only into the TensorRT version that built them; say so before TensorRT does.
  const int32_t version = getInferLibVersion();
  const std::string here = std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
                           std::to_string(version % 100);
  const std::filesystem::path plan_path = manifest.export_dir / entry.file;
  if (entry.tensorrt.rfind(here, 0) != 0 || (entry.tensorrt.size() > here.size() && entry.tensorrt[here.size()] != '.')) {
    throw HostError(ExitCode::kArtifact, plan_path.string() + " was built with TensorRT " + entry.tensorrt +
                                             ", this host runs TensorRT " + here +
                                             "; rebuild it here with `vmddpm-deploy build-engine`");
  }
  std::ifstream plan_file(plan_path, std::ios::binary);
  if (!plan_file) throw HostError(ExitCode::kArtifact, "cannot read engine " + plan_path.string());
  const std::vector<char> plan((std::istreambuf_iterator<char>(plan_file)), std::istreambuf_iterator<char>());
  s.engine.reset(s.runtime->deserializeCudaEngine(plan.data(), plan.size()));
  if (!s.engine) {
    throw HostError(ExitCode::kArtifact, "TensorRT could not deserialise " + plan_path.string() + " (built for TensorRT " +
                                             entry.tensorrt + " on compute capability " + entry.compute_capability +
                                             "; rebuild it here with `vmddpm-deploy build-engine`)" +
                                             (s.logger.last_error.empty() ? "" : ": " + s.logger.last_error));
  }
  s.context.reset(s.engine->createExecutionContext());
  if (!s.context) s.fail("cannot create a TensorRT execution context");

  s.x_name = manifest.x_name;
  s.t_name = manifest.t_name;
  s.eps_name = manifest.eps_name;
  s.x_type = s.engine->getTensorDataType(s.x_name.c_str());
  s.t_type = s.engine->getTensorDataType(s.t_name.c_str());
  s.eps_type = s.engine->getTensorDataType(s.eps_name.c_str());
  const bool float_io = (s.x_type == nvinfer1::DataType::kFLOAT || s.x_type == nvinfer1::DataType::kHALF) &&
                        s.eps_type == s.x_type;
  const bool int_t = s.t_type == nvinfer1::DataType::kINT64 || s.t_type == nvinfer1::DataType::kINT32;
  if (!float_io || !int_t) {
    throw HostError(ExitCode::kArtifact, plan_path.string() + " does not have the graph I/O of the manifest (" +
                                             s.x_name + ", " + s.t_name + " -> " + s.eps_name + ")");
  }
  s.channels = manifest.channels;
  s.height = manifest.height;
  s.width = manifest.width;
  s.numel = manifest.sample_numel();
  s.min_batch = s.engine->getProfileShape(s.x_name.c_str(), 0, nvinfer1::OptProfileSelector::kMIN).d[0];
  s.max_batch = s.engine->getProfileShape(s.x_name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX).d[0];

  check_cuda(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  check_cuda(cudaMalloc(&s.x_device, static_cast<size_t>(s.max_batch * s.numel) * element_size(s.x_type)), "cudaMalloc");
  check_cuda(cudaMalloc(&s.t_device, static_cast<size_t>(s.max_batch) * element_size(s.t_type)), "cudaMalloc");
  check_cuda(cudaMalloc(&s.eps_device, static_cast<size_t>(s.max_batch * s.numel) * element_size(s.eps_type)),
             "cudaMalloc");
  if (!s.context->setTensorAddress(s.x_name.c_str(), s.x_device) ||
      !s.context->setTensorAddress(s.t_name.c_str(), s.t_device) ||
      !s.context->setTensorAddress(s.eps_name.c_str(), s.eps_device)) {
    s.fail("cannot bind the engine's I/O tensors");
  }
}

TensorRTDenoiser::~TensorRTDenoiser() = default;

int64_t TensorRTDenoiser::max_batch() const { return state_->max_batch; }

void TensorRTDenoiser::denoise(const float* x, const int64_t* t, int64_t batch, float* eps) {
  State& s = *state_;
  if (batch < s.min_batch || batch > s.max_batch) {
    throw HostError(ExitCode::kInvalidArgument, "batch " + std::to_string(batch) + " is outside the engine's range " +
                                                    std::to_string(s.min_batch) + ".." + std::to_string(s.max_batch) +
                                                    "; use --batch-size within it");
  }
  const size_t elements = static_cast<size_t>(batch * s.numel);
  nvinfer1::Dims x_shape{};
  x_shape.nbDims = 4;
  x_shape.d[0] = batch;
  x_shape.d[1] = s.channels;
  x_shape.d[2] = s.height;
  x_shape.d[3] = s.width;
  nvinfer1::Dims t_shape{};
  t_shape.nbDims = 1;
  t_shape.d[0] = batch;
  if (!s.context->setInputShape(s.x_name.c_str(), x_shape) || !s.context->setInputShape(s.t_name.c_str(), t_shape)) {
    s.fail("the engine refused input batch " + std::to_string(batch));
  }

  // fp16 engines take and return half precision: convert on the host, round to nearest even.
  const bool half = s.x_type == nvinfer1::DataType::kHALF;
  if (half) {
    s.half_staging.resize(elements);
    for (size_t i = 0; i < elements; ++i) s.half_staging[i] = cpu::float_to_half_bits(x[i]);
    check_cuda(cudaMemcpyAsync(s.x_device, s.half_staging.data(), elements * 2, cudaMemcpyHostToDevice, s.stream),
               "cudaMemcpyAsync");
  } else {
    check_cuda(cudaMemcpyAsync(s.x_device, x, elements * 4, cudaMemcpyHostToDevice, s.stream), "cudaMemcpyAsync");
  }
  if (s.t_type == nvinfer1::DataType::kINT32) {
    s.t_staging.assign(t, t + batch);
    check_cuda(cudaMemcpyAsync(s.t_device, s.t_staging.data(), static_cast<size_t>(batch) * 4, cudaMemcpyHostToDevice,
                               s.stream),
               "cudaMemcpyAsync");
  } else {
    check_cuda(cudaMemcpyAsync(s.t_device, t, static_cast<size_t>(batch) * 8, cudaMemcpyHostToDevice, s.stream),
               "cudaMemcpyAsync");
  }
  if (!s.context->enqueueV3(s.stream)) s.fail("TensorRT failed to enqueue the engine");
  if (half) {
    check_cuda(cudaMemcpyAsync(s.half_staging.data(), s.eps_device, elements * 2, cudaMemcpyDeviceToHost, s.stream),
               "cudaMemcpyAsync");
  } else {
    check_cuda(cudaMemcpyAsync(eps, s.eps_device, elements * 4, cudaMemcpyDeviceToHost, s.stream), "cudaMemcpyAsync");
  }
  check_cuda(cudaStreamSynchronize(s.stream), "running the engine");
  if (half) {
    for (size_t i = 0; i < elements; ++i) eps[i] = cpu::half_bits_to_float(s.half_staging[i]);
  }
}

}  // namespace vmddpm::host

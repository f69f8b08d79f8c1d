// vmddpm_host: sample images from an export directory without Python.
//
//   vmddpm_host sample --export-dir exports/tiny --n 16 --steps 20 --out samples/
//   vmddpm_host sample --export-dir DIR --replay eps.bin ...   (eps recorded from Python; no GPU)
//   vmddpm_host noise --seed 0 --index 3 --stream 0 --count 1024 --out noise.npy
//   vmddpm_host info --export-dir DIR
//
// Exit codes follow vmddpm_deploy.errors: 2 bad argument, 5 output, 8 artifact, 9 backend.
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "counter_rng.h"
#include "host_error.h"
#include "image_files.h"
#include "manifest.h"
#include "replay_denoiser.h"
#include "sampler.h"
#include "sampling_loop.h"
#if defined(VMDDPM_HOST_WITH_TENSORRT)
#include "tensorrt_denoiser.h"
#endif

namespace vmddpm::host {
namespace {

const char* const kUsage =
    "usage:\n"
    "  vmddpm_host sample --export-dir DIR [--engine PLAN | --replay FILE] [--plugin-lib PATH]\n"
    "                     [--n 16] [--batch-size 8] [--micro-batch B] [--sampler dpm-solver++]\n"
    "                     [--steps 8] [--spacing S] [--eta 0]\n"
    "                     [--seed 0] [--out samples] [--npy FILE] [--no-images]\n"
    "                     --sampler: ddim, ddim-ab2 or ddim-ab3 (multistep DDIM), dpm-solver++\n"
    "                     (DPM-Solver++(2M)); all but ddim are deterministic (eta 0)\n"
    "                     --spacing: leading, trailing, linspace, quadratic, logsnr or karras;\n"
    "                     default karras for dpm-solver++, leading for the others\n"
    "                     default: the manifest's timesteps when it has them (export --timesteps)\n"
    "  vmddpm_host noise --seed S --index I --stream R --count N --out FILE.npy\n"
    "  vmddpm_host info --export-dir DIR [--json]\n"
    "\n"
    "sample runs DDIM, multistep DDIM or DPM-Solver++ (the Python samplers' rule: sample i\n"
    "depends only on (seed, i) and the rows per call) with the TensorRT engine of the manifest\n"
    "(--engine picks one when there are several), or replays eps recorded from the Python\n"
    "sampler (--replay), and\n"
    "writes one 16-bit image per sample (00000.png, ...) and optionally all images as float32\n"
    "(n, C, H, W) in --npy. Record the eps file with `vmddpm-deploy sample SRC --record-eps FILE`,\n"
    "which prints the matching host command. Each batch is cut into calls of --micro-batch rows\n"
    "(default: the batch size; a CPU run of the Python sampler uses fixed micro-batches), a short\n"
    "one padded with copies of its last sample; the images depend on it.\n"
    "\n"
    "info prints the model, image shape, engines and whether this build has the TensorRT\n"
    "denoiser; --json prints everything the host read from the manifest instead.\n";

// --key value pairs after the subcommand; flags (no value) are listed in `flags`.
class Options {
 public:
  Options(int argc, char** argv, int first, const std::vector<std::string>& flags) {
    for (int i = first; i < argc; ++i) {
      std::string key = argv[i];
      if (key.rfind("--", 0) != 0) throw HostError(ExitCode::kInvalidArgument, "unexpected argument " + key);
      key = key.substr(2);
      bool is_flag = false;
      for (const auto& flag : flags) is_flag = is_flag || flag == key;
      if (is_flag) {
        values_[key] = "1";
      } else {
        if (i + 1 >= argc) throw HostError(ExitCode::kInvalidArgument, "--" + key + " needs a value");
        values_[key] = argv[++i];
      }
    }
  }

  bool has(const std::string& key) const { return values_.count(key) != 0; }

  std::string text(const std::string& key, const std::string& fallback = "") {
    used_.push_back(key);
    const auto it = values_.find(key);
    return it == values_.end() ? fallback : it->second;
  }

  std::string required(const std::string& key) {
    if (!has(key)) throw HostError(ExitCode::kInvalidArgument, "--" + key + " is required");
    return text(key);
  }

  uint64_t unsigned_int(const std::string& key, uint64_t fallback, uint64_t minimum = 0) {
    const std::string value = text(key, std::to_string(fallback));
    char* end = nullptr;
    errno = 0;
    const unsigned long long parsed = std::strtoull(value.c_str(), &end, 10);
    if (value.empty() || value[0] == '-' || *end != '\0' || errno == ERANGE || parsed < minimum) {
      throw HostError(ExitCode::kInvalidArgument,
                      "--" + key + " must be an integer >= " + std::to_string(minimum) + ", got " + value);
    }
    return parsed;
  }

  double real(const std::string& key, double fallback) {
    const std::string value = text(key, std::to_string(fallback));
    char* end = nullptr;
    const double parsed = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0') throw HostError(ExitCode::kInvalidArgument, "--" + key + " must be a number");
    return parsed;
  }

  // Refuse options that no code path read: a typo must not pass silently.
  void check_all_used() const {
    for (const auto& [key, value] : values_) {
      bool used = false;
      for (const auto& name : used_) used = used || name == key;
      if (!used) throw HostError(ExitCode::kInvalidArgument, "unknown option --" + key);
    }
  }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> used_;
};

const EngineEntry& pick_engine(const Manifest& manifest, const std::string& requested) {
  if (!requested.empty()) return manifest.engine(std::filesystem::path(requested).filename().string());
  if (manifest.engines.size() == 1) return manifest.engines.front();
  if (manifest.engines.empty()) {
    throw HostError(ExitCode::kArtifact, manifest.export_dir.string() + " has no TensorRT engine; build one with " +
                                             "`vmddpm-deploy build-engine " + manifest.export_dir.string() + "`");
  }
  std::string names;
  for (const auto& entry : manifest.engines) names += " " + entry.file;
  throw HostError(ExitCode::kInvalidArgument, manifest.export_dir.string() + " has several engines; pick one with --engine:" + names);
}

int run_sample(Options& options) {
  const Manifest manifest = read_manifest(options.required("export-dir"));
  const uint64_t n = options.unsigned_int("n", 16, 1);
  const int64_t batch_size = static_cast<int64_t>(options.unsigned_int("batch-size", 8, 1));
  // Every call is padded to this many rows and the images depend on it: to reproduce a Python
  // run, pass the micro_batch its samples.json records under "arithmetic".
  const int64_t micro_batch = static_cast<int64_t>(options.unsigned_int("micro-batch", static_cast<uint64_t>(batch_size), 1));
  // Python's DEFAULT_SAMPLER, DEFAULT_STEPS and DEFAULT_SPACING (vmddpm_deploy/choices.py);
  // tests/host checks they agree.
  const std::string sampler_name = options.text("sampler", "dpm-solver++");
  // The manifest's timesteps (export --timesteps) unless --steps or --spacing asks for a placement.
  const bool manifest_timesteps = !manifest.timesteps.empty() && !options.has("steps") && !options.has("spacing");
  const int64_t steps = static_cast<int64_t>(options.unsigned_int("steps", 8, 1));
  const double eta = options.real("eta", 0.0);
  const std::string spacing = options.text("spacing", default_spacing(sampler_name));
  const uint64_t seed = options.unsigned_int("seed", 0);
  const std::filesystem::path out = options.text("out", "samples");
  const std::string npy = options.text("npy");
  const bool write_images = !options.has("no-images");
  options.text("no-images");
  const std::string replay = options.text("replay");
  const std::string engine_file = options.text("engine");
  const std::string plugin_library = options.text("plugin-lib");
  options.check_all_used();

  const std::unique_ptr<Sampler> sampler = make_sampler(
      sampler_name, manifest.alphas_cumprod,
      manifest_timesteps ? manifest.timesteps : sampler_timesteps(sampler_name, manifest.alphas_cumprod, steps, spacing),
      eta);
  const ImageShape shape{manifest.channels, manifest.height, manifest.width};

  std::unique_ptr<Denoiser> denoiser;
  ReplayDenoiser* replayer = nullptr;
  if (!replay.empty()) {
    auto owned = std::make_unique<ReplayDenoiser>(replay, shape.channels, shape.height, shape.width);
    replayer = owned.get();
    denoiser = std::move(owned);
  } else {
#if defined(VMDDPM_HOST_WITH_TENSORRT)
    denoiser = std::make_unique<TensorRTDenoiser>(manifest, pick_engine(manifest, engine_file), plugin_library);
#else
    (void)engine_file;
    (void)plugin_library;
    (void)pick_engine;
    throw HostError(ExitCode::kBackendUnavailable,
                    "this vmddpm_host was built without TensorRT; rebuild it with "
                    "-DVMDDPM_HOST_TENSORRT_INCLUDE_DIR=... (and libnvinfer), or use --replay");
#endif
  }
  if (micro_batch > denoiser->max_batch()) {
    throw HostError(ExitCode::kInvalidArgument, "calls of " + std::to_string(micro_batch) +
                                                    " rows (--micro-batch, default --batch-size) exceed the denoiser's maximum batch " +
                                                    std::to_string(denoiser->max_batch()));
  }

  std::error_code error;
  std::filesystem::create_directories(out, error);
  if (error || !std::filesystem::is_directory(out)) {
    throw HostError(ExitCode::kOutput, "cannot create output directory " + out.string());
  }
  std::vector<uint64_t> indices(n);
  for (uint64_t i = 0; i < n; ++i) indices[i] = i;
  std::vector<float> all_images;
  const auto started = std::chrono::steady_clock::now();
  generate(*denoiser, *sampler, seed, indices, shape, batch_size, micro_batch,
           [&](const std::vector<uint64_t>& chunk, const std::vector<float>& x0) {
             for (size_t b = 0; b < chunk.size(); ++b) {
               const float* image = x0.data() + b * shape.numel();
               if (write_images) {
                 write_image(out / image_name(chunk[b], n, image_extension(shape.channels)), image, shape.channels,
                             shape.height, shape.width);
               }
             }
             if (!npy.empty()) all_images.insert(all_images.end(), x0.begin(), x0.end());
             std::fprintf(stderr, "sampled %" PRIu64 "/%" PRIu64 "\n", chunk.back() + 1, n);
           });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!npy.empty()) {
    write_npy(npy, all_images, {static_cast<int64_t>(n), shape.channels, shape.height, shape.width});
  }
  if (replayer != nullptr) {
    if (replayer->calls_replayed() != replayer->calls_recorded()) {
      throw HostError(ExitCode::kArtifact, replay + " holds " + std::to_string(replayer->calls_recorded()) +
                                               " calls, the loop made " + std::to_string(replayer->calls_replayed()));
    }
    std::printf("replayed %zu denoiser calls; max |x - recorded x| = %.3g\n", replayer->calls_replayed(),
                replayer->max_x_error());
  }
  std::printf("wrote %" PRIu64 " images to %s in %.2f s (%s %zu steps, eta %g, %s)\n", n, out.string().c_str(),
              seconds, sampler_name.c_str(), sampler->timesteps().size(), eta,
              manifest_timesteps ? "the manifest's timesteps" : (spacing + " spacing").c_str());
  return 0;
}

int run_noise(Options& options) {
  const uint64_t seed = options.unsigned_int("seed", 0);
  const uint64_t index = options.unsigned_int("index", 0);
  const uint64_t stream = options.unsigned_int("stream", 0);
  const uint64_t count = options.unsigned_int("count", 0, 1);
  const std::string out = options.required("out");
  options.check_all_used();
  std::vector<float> noise(count);
  gaussian_noise(seed, index, stream, noise.data(), static_cast<int64_t>(count));
  write_npy(out, noise, {static_cast<int64_t>(count)});
  return 0;
}

#if defined(VMDDPM_HOST_WITH_TENSORRT)
constexpr bool kWithTensorRT = true;
#else
constexpr bool kWithTensorRT = false;
#endif

// `info` without --json: a few lines a person reads.
int print_info_summary(const Manifest& manifest) {
  std::printf("export dir   %s\n", manifest.export_dir.string().c_str());
  std::string model;
  for (const auto& [name, value] : manifest.model) model += (model.empty() ? "" : ", ") + name + "=" + value;
  std::printf("model        %s\n", model.empty() ? "(not in the manifest)" : model.c_str());
  std::printf("image        %" PRId64 " x %" PRId64 " x %" PRId64 " (C x H x W); %" PRId64 " train timesteps\n",
              manifest.channels, manifest.height, manifest.width, manifest.num_train_timesteps());
  if (manifest.engines.empty()) std::printf("engines      none (vmddpm-deploy build-engine makes one)\n");
  for (size_t i = 0; i < manifest.engines.size(); ++i) {
    const EngineEntry& e = manifest.engines[i];
    std::printf("%s %s: %s, batch %" PRId64 "..%" PRId64 ", TensorRT %s, compute capability %s\n",
                i ? "            " : "engines     ", e.file.c_str(), e.precision.c_str(), e.min_batch, e.max_batch,
                e.tensorrt.c_str(), e.compute_capability.c_str());
  }
  std::printf("tensorrt     %s\n", kWithTensorRT ? "compiled in: sample runs the engines"
                                                  : "not compiled in: sample runs --replay only");
  return 0;
}

// What the host understood of a manifest, as JSON on stdout (doubles with 17 significant
// digits, so they read back to the same float64).
int run_info(Options& options) {
  const Manifest manifest = read_manifest(options.required("export-dir"));
  const bool as_json = options.has("json");
  options.text("json");
  options.check_all_used();
  if (!as_json) return print_info_summary(manifest);
  std::printf("{\"x\": \"%s\", \"t\": \"%s\", \"eps\": \"%s\", \"shape\": [%" PRId64 ", %" PRId64 ", %" PRId64 "],\n",
              manifest.x_name.c_str(), manifest.t_name.c_str(), manifest.eps_name.c_str(), manifest.channels,
              manifest.height, manifest.width);
  std::printf(" \"num_train_timesteps\": %" PRId64 ", \"alphas_cumprod\": [", manifest.num_train_timesteps());
  for (size_t i = 0; i < manifest.alphas_cumprod.size(); ++i) {
    std::printf("%s%.17g", i ? ", " : "", manifest.alphas_cumprod[i]);
  }
  std::printf("],\n \"engines\": [");
  for (size_t i = 0; i < manifest.engines.size(); ++i) {
    const EngineEntry& e = manifest.engines[i];
    std::printf("%s{\"file\": \"%s\", \"precision\": \"%s\", \"batch\": [%" PRId64 ", %" PRId64 ", %" PRId64
                "], \"tensorrt\": \"%s\", \"compute_capability\": \"%s\", \"plugin_library\": \"%s\"}",
                i ? ", " : "", e.file.c_str(), e.precision.c_str(), e.min_batch, e.opt_batch, e.max_batch,
                e.tensorrt.c_str(), e.compute_capability.c_str(), e.plugin_library.c_str());
  }
  std::printf("]}\n");
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? static_cast<int>(ExitCode::kInvalidArgument) : 0;
  }
  const std::string command = argv[1];
  if (command == "sample") {
    Options options(argc, argv, 2, {"no-images"});
    return run_sample(options);
  }
  if (command == "noise") {
    Options options(argc, argv, 2, {});
    return run_noise(options);
  }
  if (command == "info") {
    Options options(argc, argv, 2, {"json"});
    return run_info(options);
  }
  throw HostError(ExitCode::kInvalidArgument, "unknown command " + command + "; choose sample, noise or info");
}

}  // namespace
}  // namespace vmddpm::host

int main(int argc, char** argv) {
  try {
    return vmddpm::host::run(argc, argv);
  } catch (const vmddpm::host::HostError& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return static_cast<int>(error.code());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}

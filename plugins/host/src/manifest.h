// What the host reads from an export directory's manifest.json (format vmddpm-deploy-export/1,
// written by vmddpm_deploy/export/manifest.py): the graph I/O, the noise schedule's
// alpha_bar table and the TensorRT engines built for it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace vmddpm::host {

inline constexpr const char* kManifestFormat = "vmddpm-deploy-export/1";

struct EngineEntry {
  std::string file;            // plan file name, relative to the export directory
  std::string precision;       // "fp32" | "fp16"
  int64_t min_batch = 0;
  int64_t opt_batch = 0;
  int64_t max_batch = 0;
  std::string tensorrt;        // version it was built with, e.g. "10.14.1.48"
  std::string compute_capability;  // "9.0"
  std::string plugin_library;  // file name beside the plan
};

struct Manifest {
  std::filesystem::path export_dir;
  // Graph I/O: x (batch, channels, height, width), t (batch,) -> eps like x.
  std::string x_name, t_name, eps_name;
  int64_t channels = 0, height = 0, width = 0;
  // alpha_bar_t for t = 0 .. T-1, float64 exactly as Python computed it.
  std::vector<double> alphas_cumprod;
  std::vector<EngineEntry> engines;
  // Explicit sampling timesteps, descending (`vmddpm-deploy export --timesteps`); empty: none recorded.
  std::vector<int64_t> timesteps;
  // The model config as "name", "value" text pairs (arrays as "1,2,2"), for `vmddpm_host info`.
  std::vector<std::pair<std::string, std::string>> model;

  int64_t num_train_timesteps() const { return static_cast<int64_t>(alphas_cumprod.size()); }
  int64_t sample_numel() const { return channels * height * width; }
  // The entry for plan `file` (its name inside the export directory); HostError if absent.
  const EngineEntry& engine(const std::string& file) const;
};

// Read and validate `export_dir/manifest.json`. Throws HostError(kArtifact) naming the file and
// the field when it is missing, malformed or of another format.
Manifest read_manifest(const std::filesystem::path& export_dir);

// The same from text (for messages, `source` names where it came from).
Manifest parse_manifest(const std::string& text, const std::filesystem::path& export_dir, const std::string& source);

}  // namespace vmddpm::host

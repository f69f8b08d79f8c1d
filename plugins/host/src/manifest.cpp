#include "manifest.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "ddim.h"
#include "host_error.h"
#include "json.h"

namespace vmddpm::host {
namespace {

const char* const kReexport = "re-export with `vmddpm-deploy export CHECKPOINT -o DIR --force`";

// Entry `index` of an I/O list: {"name": ..., "dtype": ..., "shape": ["batch", ...]} of `rank` dims.
const json::Value& io_entry(const json::Value& list, size_t index, size_t count, size_t rank) {
  const auto& items = list.items();
  if (items.size() != count) {
    throw json::TypeError(list.path() + " must list " + std::to_string(count) + " tensor(s), found " +
                          std::to_string(items.size()));
  }
  const json::Value& entry = items[index];
  const json::Value& shape = entry.at("shape");
  if (shape.items().size() != rank) {
    throw json::TypeError(shape.path() + " must have " + std::to_string(rank) + " dimensions");
  }
  return entry;
}

int64_t positive_dim(const json::Value& value) {
  const int64_t dim = value.as_int();
  if (dim < 1) throw json::TypeError(value.path() + " must be a positive integer");
  return dim;
}

}  // namespace

const EngineEntry& Manifest::engine(const std::string& file) const {
  for (const auto& entry : engines) {
    if (entry.file == file) return entry;
  }
  throw HostError(ExitCode::kArtifact, (export_dir / "manifest.json").string() + " lists no engine " + file +
                                           "; build one with `vmddpm-deploy build-engine " + export_dir.string() + "`");
}

// A config value as text: numbers as written (integers without a fraction), arrays joined by commas.
static std::string scalar_text(const json::Value& value) {
  switch (value.type()) {
    case json::Value::Type::kString:
      return value.as_string();
    case json::Value::Type::kBool:
      return value.as_bool() ? "true" : "false";
    case json::Value::Type::kNumber: {
      char text[32];
      std::snprintf(text, sizeof text, "%.10g", value.as_double());
      return text;
    }
    case json::Value::Type::kArray: {
      std::string joined;
      for (const auto& item : value.items()) joined += (joined.empty() ? "" : ",") + scalar_text(item);
      return joined;
    }
    default:
      return "null";
  }
}

Manifest parse_manifest(const std::string& text, const std::filesystem::path& export_dir, const std::string& source) {
  Manifest manifest;
  manifest.export_dir = export_dir;
  try {
    const json::Value root = json::parse(text);
    const std::string& format = root.at("format").as_string();
    if (format != kManifestFormat) {
      throw HostError(ExitCode::kArtifact, source + " has format \"" + format + "\"; this host reads \"" +
                                               kManifestFormat + "\"; " + kReexport);
    }
    // docs/design.md section 3: inputs [x (batch, C, H, W), t (batch,)], outputs [eps (batch, C, H, W)].
    const json::Value& x = io_entry(root.at("inputs"), 0, 2, 4);
    const json::Value& t = io_entry(root.at("inputs"), 1, 2, 1);
    const json::Value& eps = io_entry(root.at("outputs"), 0, 1, 4);
    manifest.x_name = x.at("name").as_string();
    manifest.t_name = t.at("name").as_string();
    manifest.eps_name = eps.at("name").as_string();
    const auto& shape = x.at("shape").items();
    manifest.channels = positive_dim(shape[1]);
    manifest.height = positive_dim(shape[2]);
    manifest.width = positive_dim(shape[3]);

    const json::Value& table = root.at("schedule").at("alphas_cumprod");
    const int64_t steps = root.at("schedule").at("num_train_timesteps").as_int();
    for (const auto& item : table.items()) {
      const double value = item.as_double();
      // alpha_bar is a product of (1 - beta) with beta in (0, 1).
      if (!(value > 0.0 && value < 1.0)) throw json::TypeError(item.path() + " must lie in (0, 1)");
      manifest.alphas_cumprod.push_back(value);
    }
    if (static_cast<int64_t>(manifest.alphas_cumprod.size()) != steps) {
      throw json::TypeError(table.path() + " has " + std::to_string(manifest.alphas_cumprod.size()) +
                            " values, num_train_timesteps says " + std::to_string(steps));
    }

    if (const json::Value* timesteps = root.find("timesteps")) {
      for (const auto& item : timesteps->items()) manifest.timesteps.push_back(item.as_int());
      try {
        check_timesteps(steps, manifest.timesteps);
      } catch (const HostError& error) {
        throw json::TypeError(timesteps->path() + ": " + error.what());
      }
    }

    if (const json::Value* model = root.find("model")) {
      for (const auto& [name, value] : model->members()) manifest.model.emplace_back(name, scalar_text(value));
    }

    if (const json::Value* engines = root.find("engines")) {
      for (const auto& [file, entry] : engines->members()) {
        EngineEntry engine;
        engine.file = file;
        engine.precision = entry.at("precision").as_string();
        engine.min_batch = entry.at("min_batch").as_int();
        engine.opt_batch = entry.at("opt_batch").as_int();
        engine.max_batch = entry.at("max_batch").as_int();
        engine.tensorrt = entry.at("tensorrt").as_string();
        engine.compute_capability = entry.at("compute_capability").as_string();
        engine.plugin_library = entry.at("plugin_library").as_string();
        if (!(1 <= engine.min_batch && engine.min_batch <= engine.opt_batch && engine.opt_batch <= engine.max_batch)) {
          throw json::TypeError(entry.path() + " has an invalid batch range");
        }
        manifest.engines.push_back(engine);
      }
    }
  } catch (const json::ParseError& error) {
    throw HostError(ExitCode::kArtifact, source + " is not valid JSON (" + error.what() + "); " + kReexport);
  } catch (const json::TypeError& error) {
    throw HostError(ExitCode::kArtifact, source + ": " + error.what() + "; " + kReexport);
  }
  return manifest;
}

Manifest read_manifest(const std::filesystem::path& export_dir) {
  const std::filesystem::path path = export_dir / "manifest.json";
  if (!std::filesystem::is_directory(export_dir)) {
    throw HostError(ExitCode::kArtifact, "export directory not found: " + export_dir.string() +
                                             "; create it with `vmddpm-deploy export`");
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw HostError(ExitCode::kArtifact, export_dir.string() + " has no manifest.json; it is not an export directory (" +
                                             kReexport + ")");
  }
  std::ostringstream text;
  text << file.rdbuf();
  return parse_manifest(text.str(), export_dir, path.string());
}

}  // namespace vmddpm::host

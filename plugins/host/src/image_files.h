// Writing the host's images the way vmddpm_deploy.outputs does: [-1, 1] floats to uint16
// (round half to even of (clip(x) + 1) * 65535 / 2), one 16-bit PNG per sample named like
// png_name (00000.png ...), each written under a temporary name and renamed into place.
// Without zlib the host writes 16-bit PGM / PPM instead (1 or 3 channels).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace vmddpm::host {

// (clip(x, -1, 1) + 1) * 32767.5 rounded half to even, in float32 as numpy computes it.
uint16_t to_uint16(float value);

// The file name of sample `index` in a run of `total`: zero-padded to max(5, digits of total - 1).
std::string image_name(uint64_t index, uint64_t total, const std::string& extension);

// ".png" when the host was built with zlib, else ".pgm" (1 channel) / ".ppm" (3 channels).
std::string image_extension(int64_t channels);

// One (C, H, W) image of float32 in [-1, 1]. Throws HostError(kOutput) when it cannot write
// the file, HostError(kInvalidArgument) for a channel count the format cannot hold.
void write_image(const std::filesystem::path& path, const float* image, int64_t channels, int64_t height,
                 int64_t width);

// A float32 .npy array of `shape` (numpy's format version 1.0), written atomically.
void write_npy(const std::filesystem::path& path, const std::vector<float>& data, const std::vector<int64_t>& shape);

// Write `bytes` to `path` through a temporary file in the same directory and a rename.
void write_file_atomic(const std::filesystem::path& path, const std::string& bytes);

}  // namespace vmddpm::host

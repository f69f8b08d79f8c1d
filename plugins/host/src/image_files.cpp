#include "image_files.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <system_error>

#if defined(VMDDPM_HOST_WITH_ZLIB)
#include <zlib.h>
#endif

#if defined(_WIN32)
#include <process.h>
#define vmddpm_getpid _getpid
#else
#include <unistd.h>
#define vmddpm_getpid getpid
#endif

#include "host_error.h"

namespace vmddpm::host {
namespace {

void put_u32_be(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xFF);
}

// Samples interleaved per pixel, big-endian: what PNG and 16-bit PNM both store.
std::string interleaved_be16(const float* image, int64_t channels, int64_t height, int64_t width, bool row_filter_byte) {
  std::string out;
  out.reserve(static_cast<size_t>(height * (width * channels * 2 + 1)));
  const int64_t plane = height * width;
  for (int64_t y = 0; y < height; ++y) {
    if (row_filter_byte) out += '\0';  // PNG filter type 0 (None) per row
    for (int64_t x = 0; x < width; ++x) {
      for (int64_t c = 0; c < channels; ++c) {
        const uint16_t value = to_uint16(image[c * plane + y * width + x]);
        out += static_cast<char>(value >> 8);
        out += static_cast<char>(value & 0xFF);
      }
    }
  }
  return out;
}

#if defined(VMDDPM_HOST_WITH_ZLIB)
std::string png_chunk(const char* kind, const std::string& data) {
  std::string chunk;
  put_u32_be(chunk, static_cast<uint32_t>(data.size()));
  const std::string body = std::string(kind, 4) + data;
  chunk += body;
  put_u32_be(chunk, static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(body.data()),
                                                static_cast<uInt>(body.size()))));
  return chunk;
}

std::string encode_png16(const float* image, int64_t channels, int64_t height, int64_t width) {
  static const int kColourType[] = {0, 0, 4, 2, 6};  // by channels: grey, grey+alpha, RGB, RGBA
  const std::string raw = interleaved_be16(image, channels, height, width, true);
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string compressed(size, '\0');
  if (compress2(reinterpret_cast<Bytef*>(compressed.data()), &size, reinterpret_cast<const Bytef*>(raw.data()),
                static_cast<uLong>(raw.size()), 6) != Z_OK) {
    throw HostError(ExitCode::kOutput, "zlib could not compress an image");
  }
  compressed.resize(size);
  std::string header;
  put_u32_be(header, static_cast<uint32_t>(width));
  put_u32_be(header, static_cast<uint32_t>(height));
  header += static_cast<char>(16);  // bit depth
  header += static_cast<char>(kColourType[channels]);
  header += std::string(3, '\0');  // deflate, adaptive filtering, no interlace
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", header) + png_chunk("IDAT", compressed) +
         png_chunk("IEND", "");
}
#endif

}  // namespace

uint16_t to_uint16(float value) {
  const float clipped = std::min(std::max(value, -1.0f), 1.0f);
  return static_cast<uint16_t>(std::nearbyint((clipped + 1.0f) * 32767.5f));
}

std::string image_name(uint64_t index, uint64_t total, const std::string& extension) {
  const std::string last = std::to_string(total > 0 ? total - 1 : 0);
  const size_t width = std::max<size_t>(5, last.size());
  std::string digits = std::to_string(index);
  if (digits.size() < width) digits.insert(0, width - digits.size(), '0');
  return digits + extension;
}

std::string image_extension(int64_t channels) {
#if defined(VMDDPM_HOST_WITH_ZLIB)
  (void)channels;
  return ".png";
#else
  return channels == 3 ? ".ppm" : ".pgm";
#endif
}

void write_file_atomic(const std::filesystem::path& path, const std::string& bytes) {
  const std::filesystem::path tmp =
      path.parent_path() / ("." + path.filename().string() + ".tmp-" + std::to_string(vmddpm_getpid()));
  {
    std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    file.flush();
    if (!file) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      throw HostError(ExitCode::kOutput, "cannot write " + path.string() + " (disk full or not writable?)");
    }
  }
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  if (error) {
    std::filesystem::remove(tmp, error);
    throw HostError(ExitCode::kOutput, "cannot write " + path.string() + ": " + error.message());
  }
}

void write_image(const std::filesystem::path& path, const float* image, int64_t channels, int64_t height,
                 int64_t width) {
#if defined(VMDDPM_HOST_WITH_ZLIB)
  if (channels < 1 || channels > 4) {
    throw HostError(ExitCode::kInvalidArgument,
                    "PNG holds 1 to 4 channels, the model makes " + std::to_string(channels) + "; use --npy");
  }
  write_file_atomic(path, encode_png16(image, channels, height, width));
#else
  if (channels != 1 && channels != 3) {
    throw HostError(ExitCode::kInvalidArgument, "PGM/PPM hold 1 or 3 channels, the model makes " +
                                                    std::to_string(channels) + "; use --npy (or build with zlib)");
  }
  const std::string header = std::string(channels == 1 ? "P5" : "P6") + "\n" + std::to_string(width) + " " +
                             std::to_string(height) + "\n65535\n";
  write_file_atomic(path, header + interleaved_be16(image, channels, height, width, false));
#endif
}

void write_npy(const std::filesystem::path& path, const std::vector<float>& data, const std::vector<int64_t>& shape) {
  std::string dims;
  for (const int64_t dim : shape) dims += std::to_string(dim) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 1);  // "(2, 3)" but "(2,)"
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of
  // 64 and ended by a newline.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xFF);
  bytes += static_cast<char>((header.size() >> 8) & 0xFF);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));  // little-endian hosts
  write_file_atomic(path, bytes);
}

}  // namespace vmddpm::host

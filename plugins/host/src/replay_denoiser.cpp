#include "replay_denoiser.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "host_error.h"

namespace vmddpm::host {
namespace {

template <typename T>
void read_array(std::ifstream& file, T* out, size_t count, const std::filesystem::path& path) {
  file.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(count * sizeof(T)));
  if (!file) throw HostError(ExitCode::kArtifact, path.string() + " is truncated; record it again");
}

}  // namespace

ReplayDenoiser::ReplayDenoiser(const std::filesystem::path& path, int64_t channels, int64_t height, int64_t width)
    : path_(path), numel_(channels * height * width) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw HostError(ExitCode::kArtifact, "cannot open replay file " + path.string());
  char magic[8];
  read_array(file, magic, 8, path);
  if (std::memcmp(magic, "VMDEPS01", 8) != 0) {
    throw HostError(ExitCode::kArtifact, path.string() + " is not an eps recording (bad magic)");
  }
  uint32_t header[4];
  read_array(file, header, 4, path);
  if (header[0] != channels || header[1] != height || header[2] != width) {
    throw HostError(ExitCode::kArtifact, path.string() + " was recorded for images " + std::to_string(header[0]) + "x" +
                                             std::to_string(header[1]) + "x" + std::to_string(header[2]) +
                                             ", the manifest says " + std::to_string(channels) + "x" +
                                             std::to_string(height) + "x" + std::to_string(width));
  }
  calls_.resize(header[3]);
  for (auto& call : calls_) {
    uint32_t batch = 0;
    read_array(file, &batch, 1, path);
    call.t.resize(batch);
    call.x.resize(static_cast<size_t>(batch * numel_));
    call.eps.resize(call.x.size());
    read_array(file, call.t.data(), call.t.size(), path);
    read_array(file, call.x.data(), call.x.size(), path);
    read_array(file, call.eps.data(), call.eps.size(), path);
    max_batch_ = std::max<int64_t>(max_batch_, batch);
  }
}

void ReplayDenoiser::denoise(const float* x, const int64_t* t, int64_t batch, float* eps) {
  if (next_ >= calls_.size()) {
    throw HostError(ExitCode::kArtifact, path_.string() + " holds " + std::to_string(calls_.size()) +
                                             " calls; the loop asked for more (different --n, --steps or --batch-size?)");
  }
  const Call& call = calls_[next_];
  if (static_cast<int64_t>(call.t.size()) != batch || !std::equal(call.t.begin(), call.t.end(), t)) {
    throw HostError(ExitCode::kArtifact, "call " + std::to_string(next_) + " of " + path_.string() +
                                             " was recorded with other timesteps or batch size than the host asks for");
  }
  for (size_t i = 0; i < call.x.size(); ++i) {
    max_x_error_ = std::max(max_x_error_, static_cast<double>(std::fabs(x[i] - call.x[i])));
  }
  std::copy(call.eps.begin(), call.eps.end(), eps);
  ++next_;
}

}  // namespace vmddpm::host

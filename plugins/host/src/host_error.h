// The host's failure families, with the exit codes of vmddpm_deploy.errors, so that a script
// driving either the Python CLI or this host reads the same codes.
#pragma once

#include <stdexcept>
#include <string>

namespace vmddpm::host {

enum class ExitCode : int {
  kInvalidArgument = 2,      // a command-line value is missing or out of range
  kOutput = 5,               // an output file cannot be written
  kArtifact = 8,             // manifest / plan / replay file missing, corrupt or for something else
  kBackendUnavailable = 9,   // TensorRT, a GPU or the plugin library is missing
};

class HostError : public std::runtime_error {
 public:
  HostError(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

}  // namespace vmddpm::host

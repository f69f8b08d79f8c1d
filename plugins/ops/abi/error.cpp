#include "error.h"

#include <cstdarg>
#include <cstdio>

namespace vmddpm {
namespace {
// A fixed buffer rather than std::string: recording an error must not itself allocate or throw.
thread_local char last_error_message[1024] = "";
}  // namespace

void clear_last_error() { last_error_message[0] = '\0'; }

int fail(int status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vsnprintf(last_error_message, sizeof last_error_message, format, args);
  va_end(args);
  return status;
}

}  // namespace vmddpm

extern "C" const char* vmddpm_last_error(void) { return vmddpm::last_error_message; }

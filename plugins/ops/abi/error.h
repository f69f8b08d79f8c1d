// Per-thread error reporting for the C ABI: every entry point clears the message, and a failure
// records one before returning its status, so callers can read vmddpm_last_error().
#pragma once

#include <exception>
#include <new>

#include "vmddpm/ops.h"

namespace vmddpm {

void clear_last_error();

// Records the printf-style message as this thread's last error and returns `status`.
int fail(int status, const char* format, ...) __attribute__((format(printf, 2, 3)));

// Runs `body` (returning a vmddpm_status) so that no C++ exception crosses the C ABI.
template <typename Body>
int guard_abi_call(const char* op, Body&& body) noexcept {
  clear_last_error();
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(VMDDPM_ERROR_OUT_OF_MEMORY, "%s: out of host memory", op);
  } catch (const std::exception& error) {
    return fail(VMDDPM_ERROR_INTERNAL, "%s: unexpected error: %s", op, error.what());
  } catch (...) {
    return fail(VMDDPM_ERROR_INTERNAL, "%s: unexpected non-standard exception", op);
  }
}

}  // namespace vmddpm

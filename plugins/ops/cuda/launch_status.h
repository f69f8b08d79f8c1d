// Turns the CUDA runtime's verdict on the launches just made into a vmddpm status.
#pragma once

namespace vmddpm::cuda {

// VMDDPM_OK, or VMDDPM_ERROR_CUDA with the runtime's message (bad launch configuration, no
// device, no driver) recorded for vmddpm_last_error().
int launch_status(const char* op);

}  // namespace vmddpm::cuda

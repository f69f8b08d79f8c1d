// A global operator new that fails on request, preloaded (LD_PRELOAD) into a test process so that
// tests/plugins/test_trt_adapter.py can make an allocation inside a plugin method throw
// std::bad_alloc: failing_new_after(n) lets n more allocations of the calling thread succeed and
// fails the next one, once; -1 (the start) never fails.
#include <cstdlib>
#include <new>

namespace {
thread_local long allocations_left = -1;
}

extern "C" __attribute__((visibility("default"))) void failing_new_after(long allocations) {
  allocations_left = allocations;
}

void* operator new(std::size_t size) {
  if (allocations_left == 0) {
    allocations_left = -1;
    throw std::bad_alloc();
  }
  if (allocations_left > 0) --allocations_left;
  if (void* memory = std::malloc(size == 0 ? 1 : size)) return memory;
  throw std::bad_alloc();
}

void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* memory) noexcept { std::free(memory); }
void operator delete[](void* memory) noexcept { std::free(memory); }
void operator delete(void* memory, std::size_t) noexcept { std::free(memory); }
void operator delete[](void* memory, std::size_t) noexcept { std::free(memory); }

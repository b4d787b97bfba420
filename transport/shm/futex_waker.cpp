#include "transport/shm/futex_waker.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

namespace chat::transport::shm {
namespace {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

std::uint32_t* word(WakeArea& area) {
  return reinterpret_cast<std::uint32_t*>(&area.sleeping);
}

class FutexWaker final : public Waker {
 public:
  void init(WakeArea& area) override { area.sleeping.store(0); }
  void attach_sleeper(WakeArea&) override {}

  void sleep(WakeArea& area, Deadline deadline) override {
    // Blocks only while `sleeping` is still 1: a waker clears it before FUTEX_WAKE, so a wake
    // between our last check and this call makes the kernel return at once (EAGAIN).
    const timespec ts = to_monotonic_timespec(deadline);
    ::syscall(SYS_futex, word(area), FUTEX_WAIT_BITSET, 1u, deadline == kNoDeadline ? nullptr : &ts,
              nullptr, FUTEX_BITSET_MATCH_ANY);
  }

  void wake(WakeArea& area, pid_t) override {
    ::syscall(SYS_futex, word(area), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }
};

}  // namespace

std::unique_ptr<Waker> make_futex_waker() {
  return std::make_unique<FutexWaker>();
}

}  // namespace chat::transport::shm

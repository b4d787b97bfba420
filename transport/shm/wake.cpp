#include "transport/shm/wake.hpp"

namespace chat::transport::shm {

WakeResult notify(Waker& waker, WakeArea& area, pid_t sleeper_pid) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (area.sleeping.load(std::memory_order_relaxed) == 0) return WakeResult::kIdle;
  if (area.sleeping.exchange(0, std::memory_order_acq_rel) == 0) return WakeResult::kIdle;
  return waker.wake(area, sleeper_pid);
}

}  // namespace chat::transport::shm

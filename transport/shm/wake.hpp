// Sleeping and waking across processes for the shared-memory backends: how the server wakes a
// client's thread (the server itself sleeps in epoll on the server bell, transport/bell.hpp).
//
// A WakeArea in shared memory belongs to exactly one sleeping thread. The sleeper announces
// `sleeping`, re-checks its condition, and only then blocks; a waker publishes its data first
// and rings the doorbell only if the sleeper said it sleeps (Dekker-style, with full fences
// on both sides), so there are no lost wake-ups and no system call when nobody sleeps.
// The backends differ only in the Waker: condvar, semaphore, or real-time signal.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "common/time.hpp"

namespace chat::transport::shm {

struct alignas(64) WakeArea {
  std::atomic<std::uint32_t> sleeping;
  std::atomic<std::int32_t> sleeper_tid;  // for wakers that target one thread
  alignas(16) std::byte impl[192];        // the Waker's own objects (mutex+condvar, sem_t...)
};

// What a wake-up found. The area lives in memory its sleeper can write: a waker never waits
// for it beyond a few microseconds, and says so instead.
enum class WakeResult {
  kIdle,    // nobody said it sleeps: nothing to do
  kDone,    // rung
  kBusy,    // the sleeper's lock was held past the waker's patience; signalled anyway
  kBroken,  // the area is unusable (a corrupted lock); nothing could be done
};

// How one backend blocks and wakes. Implementations are stateless or thread-safe.
class Waker {
 public:
  virtual ~Waker() = default;
  // Prepares `area` in freshly created shared memory (creator only).
  virtual void init(WakeArea& area) = 0;
  // Called once by the thread that will sleep on `area`, before it first sleeps.
  virtual void attach_sleeper(WakeArea& area) = 0;
  // Blocks the calling thread until woken or `deadline`. May return early (callers re-check).
  // Only called after `area.sleeping` was set by the caller.
  virtual void sleep(WakeArea& area, Deadline deadline) = 0;
  // Wakes the sleeper of `area`, a thread of process `sleeper_pid`. Never blocks for long.
  virtual WakeResult wake(WakeArea& area, pid_t sleeper_pid) = 0;
};

// Wakes the sleeper of `area` if, and only if, it announced that it sleeps. Call after
// publishing the data the sleeper waits for.
WakeResult notify(Waker& waker, WakeArea& area, pid_t sleeper_pid);

// Spin-then-block tuning for one waiting thread: spins only while spinning has been paying
// off recently (the peer answered within the spin), and never longer than kMaxSpinNs. Once
// misses have worn the budget down to nothing, one wait in kProbeEvery still spins kProbeNs:
// a budget that collapsed while the machine was busy grows again when answers come quickly,
// while a busy machine, where a spin only delays the peer we wait for, pays next to nothing.
class SpinBudget {
 public:
  static constexpr std::int64_t kMaxSpinNs = 20'000;
  static constexpr std::int64_t kProbeNs = 2'000;
  static constexpr unsigned kProbeEvery = 64;
  // How long the next wait may spin (0: not at all).
  std::int64_t next_spin_ns() {
    if (budget_ns_ > 0) return budget_ns_;
    return ++waits_since_probe_ % kProbeEvery == 0 ? kProbeNs : 0;
  }
  void spin_hit() {
    budget_ns_ = budget_ns_ * 2 + 1'000 > kMaxSpinNs ? kMaxSpinNs : budget_ns_ * 2 + 1'000;
  }
  void spin_miss() { budget_ns_ /= 2; }

 private:
  std::int64_t budget_ns_ = 4'000;
  unsigned waits_since_probe_ = 0;
};

// Waits until `ready()` is true or `deadline` passes; returns ready(). Spins within `spin`'s
// budget first, then sleeps on `area` in slices of at most `max_sleep` (a bounded re-check,
// so even a lost doorbell delays by no more than that).
template <typename Ready>
bool wait_until(Waker& waker, WakeArea& area, SpinBudget& spin, Ready&& ready, Deadline deadline,
                Clock::duration max_sleep = std::chrono::milliseconds(500)) {
  if (ready()) return true;
  if (const std::int64_t spin_ns = spin.next_spin_ns(); spin_ns > 0) {
    const auto spin_end = Clock::now() + std::chrono::nanoseconds(spin_ns);
    for (unsigned i = 1;; ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if (ready()) {
        spin.spin_hit();
        return true;
      }
      if ((i & 15) == 0 && Clock::now() >= spin_end) break;
    }
    spin.spin_miss();
  }
  for (;;) {
    area.sleeping.store(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ready()) {
      area.sleeping.store(0, std::memory_order_relaxed);
      return true;
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      area.sleeping.store(0, std::memory_order_relaxed);
      return false;
    }
    const Deadline slice = deadline - now > max_sleep ? now + max_sleep : deadline;
    waker.sleep(area, slice);
    area.sleeping.store(0, std::memory_order_relaxed);
    if (ready()) return true;
  }
}

}  // namespace chat::transport::shm

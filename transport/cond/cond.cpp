#include "transport/cond/cond.hpp"

#include <time.h>

#include "transport/shm/engine.hpp"
#include "transport/shm/futex_waker.hpp"
#include "transport/shm/posix_shm.hpp"

namespace chat::transport::cond {
namespace {

static_assert(sizeof(CondWake) <= sizeof(shm::WakeArea::impl));

// How long a waker keeps trying the sleeper's mutex before it signals without it. The
// sleeper holds it only for a few instructions, unless it is stopped or hostile; then this
// bounds what it costs the waker, and the sleeper still finds its data at its next re-check.
constexpr auto kWakeLockPatience = std::chrono::microseconds(20);

class CondWaker final : public shm::Waker {
 public:
  void init(shm::WakeArea& area) override {
    area.sleeping.store(0);
    cond_wake(area).mutex.init();
    cond_wake(area).cond.init();
  }

  void attach_sleeper(shm::WakeArea&) override {}

  void sleep(shm::WakeArea& area, Deadline deadline) override {
    CondWake& w = cond_wake(area);
    const shm::LockResult locked = w.mutex.lock(deadline);
    if (locked == shm::LockResult::kTimedOut) return;
    if (locked == shm::LockResult::kBroken) {
      // Someone else's memory error; do not spin on it. Sleep a little, re-check, carry on.
      const timespec pause{0, 1'000'000};
      ::nanosleep(&pause, nullptr);
      return;
    }
    // kRecovered: the state this mutex protects is only `sleeping`, an atomic; nothing to fix.
    while (area.sleeping.load(std::memory_order_acquire) != 0) {
      const shm::LockResult r = w.cond.wait(w.mutex, deadline);
      if (r == shm::LockResult::kBroken) return;  // not holding the mutex any more
      if (r == shm::LockResult::kTimedOut) break;
    }
    w.mutex.unlock();
  }

  void wake(shm::WakeArea& area, pid_t) override {
    CondWake& w = cond_wake(area);
    // Taking the mutex orders us after a sleeper that checked `sleeping` but has not blocked
    // yet. Only try: blocking on a mutex the peer holds would let it stall us. Signal after
    // unlocking, so the woken sleeper does not block on the mutex we hold.
    const shm::LockResult r = w.mutex.lock(deadline_after(kWakeLockPatience));
    if (r == shm::LockResult::kLocked || r == shm::LockResult::kRecovered) w.mutex.unlock();
    w.cond.signal();
  }
};

}  // namespace

shm::Flavor flavor(const std::filesystem::path& dir) {
  // Clients sleep on condition variables in their own segments. The server sleeps on a futex
  // word instead: a condvar waiter must re-take its mutex to return, and any client can hold a
  // mutex in the control segment, so one stopped client would stall the server (the crash
  // test shows it).
  return shm::Flavor{shm::make_posix_shm_source(dir), std::make_unique<CondWaker>(),
                     shm::make_futex_waker()};
}

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return shm::listen(options, flavor(options.dir));
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  return shm::connect(options, flavor(options.dir));
}

std::vector<std::string> cleanup(const CleanupOptions& options) {
  return shm::remove_posix_shm_leftovers(options.dir);
}

}  // namespace chat::transport::cond

#include "transport/cond/cond.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/error.hpp"
#include "transport/shm/posix_shm.hpp"

namespace chat::transport::cond {
namespace {

static_assert(sizeof(CondWake) <= sizeof(shm::WakeArea::impl));

// How long a waker keeps trying the sleeper's locks before it gives up on them. The sleeper
// holds them only for a few instructions, unless it is stopped or hostile; then this bounds
// what it costs the waker, and the sleeper still finds its data at its next re-check.
constexpr auto kWakeLockPatience = std::chrono::microseconds(20);

// glibc's condvar has a lock of its own (the two low bits of __g1_orig_size) that
// pthread_cond_signal waits for, in the kernel and without a deadline, whenever there are
// waiters. The sleeper can write it: a signal is only sent while it looks free.
bool internal_lock_free(shm::SharedCondvar& cond, Deadline until) {
  for (;;) {
    if ((__atomic_load_n(&cond.native.__data.__g1_orig_size, __ATOMIC_ACQUIRE) & 3) == 0) {
      return true;
    }
    if (Clock::now() >= until) return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

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

  shm::WakeResult wake(shm::WakeArea& area, pid_t) override {
    CondWake& w = cond_wake(area);
    // Taking the mutex orders us after a sleeper that checked `sleeping` but has not blocked
    // yet. Only try: blocking on a mutex the peer holds would let it stall us. Signal after
    // unlocking, so the woken sleeper does not block on the mutex we hold.
    const Deadline until = deadline_after(kWakeLockPatience);
    const shm::LockResult r = w.mutex.lock(until);
    if (r == shm::LockResult::kBroken) return shm::WakeResult::kBroken;
    const bool held = r == shm::LockResult::kTimedOut;
    if (!held) w.mutex.unlock();
    if (!internal_lock_free(w.cond, until)) return shm::WakeResult::kBusy;
    w.cond.signal();
    return held ? shm::WakeResult::kBusy : shm::WakeResult::kDone;
  }
};

// Segments are memfds: POSIX shared memory (tmpfs) without a name anyone could open, sealed
// against resizing so a client cannot truncate the memory the server reads (see
// shm/sigbus_guard.hpp for why that matters).
class MemfdSource final : public shm::MemorySource {
 public:
  std::unique_ptr<shm::Segment> create(std::string_view what, std::size_t bytes) override {
    const std::string label = "memfd ipchat-cond." + std::string(what);
    UniqueFd fd(::memfd_create("ipchat-cond", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) throw_system_error("memfd_create", label);
    // memfds are born 0777; nobody else can reach this one, but say so in its mode too.
    if (::fchmod(fd.get(), 0600) != 0) throw_system_error("fchmod", label);
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
      throw_system_error("ftruncate", label);
    }
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
      throw_system_error("fcntl(F_ADD_SEALS)", label);
    }
    return std::make_unique<shm::FdSegment>(std::move(fd), bytes, label);
  }

  std::unique_ptr<shm::Segment> attach(const nlohmann::json&, UniqueFd fd, std::size_t bytes,
                                       uid_t owner) override {
    shm::check_private_file(fd.get(), bytes, owner, "the granted segment");
    const int seals = ::fcntl(fd.get(), F_GET_SEALS);
    if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
      throw std::runtime_error("the granted segment is not sealed against resizing");
    }
    auto segment = std::make_unique<shm::FdSegment>(std::move(fd), bytes, "the granted segment");
    segment->close_fd();
    return segment;
  }

  bool passes_fd() const override { return true; }

  // Nothing has a name, so nothing can be left behind.
  nlohmann::json objects() const override { return {{"segments", "memfd"}}; }
};

}  // namespace

shm::Flavor flavor(const std::filesystem::path&) {
  // Clients sleep on condition variables in their own segments; the server never sleeps on
  // anything in shared memory (it sleeps on the bell, in epoll).
  return shm::Flavor{std::make_unique<MemfdSource>(), std::make_unique<CondWaker>()};
}

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return shm::listen(options, "cond", flavor(options.dir));
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  return shm::connect(options, flavor(options.dir));
}

std::vector<std::string> cleanup(const CleanupOptions& options) {
  // Segments of servers from before the door had /dev/shm names.
  return shm::remove_posix_shm_leftovers(options.dir);
}

}  // namespace chat::transport::cond

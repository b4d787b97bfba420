#include "transport/signal/signal.hpp"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <utility>

#include "common/error.hpp"
#include "transport/shm/engine.hpp"
#include "transport/shm/layout.hpp"
#include "transport/signal/sysv_shm.hpp"

namespace chat::transport::sig {
namespace {

// The size of the control segment of servers from before the door, for their leftovers.
constexpr std::size_t kPreDoorCtlBytes = 6464;

// Doorbells still pending after a wake-up are stale (the sleeper re-checks anyway); taking
// them keeps them from ending a later sleep early. Bounded so a flood cannot hold us here.
constexpr int kMaxDrain = 64;

timespec remaining(Deadline deadline) {
  const auto left = std::max(deadline - Clock::now(), Clock::duration::zero());
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
  return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

// Wakes a sleeper by sending a signal to its thread. Sleepers publish their tid in the shared
// WakeArea; wakers send to that tid only within the sleeper's process (tgsigqueueinfo and
// tgkill check that the thread belongs to `pid`), so a scribbled tid can at worst ring the
// wrong thread of the right process, whose blocked signal then just stays pending. (A hostile
// client can name another process of our uid as its pid; it could signal that process itself.)
class SignalWaker final : public shm::Waker {
 public:
  SignalWaker()
      : own_pid_(::getpid()),
        own_uid_(::getuid()),
        doorbell_(doorbell_signal()),
        set_(doorbell_signals()) {}

  void init(shm::WakeArea& area) override {
    area.sleeping.store(0);
    area.sleeper_tid.store(0);
  }

  void attach_sleeper(shm::WakeArea& area) override {
    const pid_t tid = static_cast<pid_t>(::gettid());
    {
      std::lock_guard lock(mutex_);
      const auto it = std::find_if(sleepers_.begin(), sleepers_.end(),
                                   [&](const auto& s) { return s.first == &area; });
      if (it != sleepers_.end() && it->second == tid) {
        // Repairs a tid another process scribbled over; a plain load when nobody did.
        if (area.sleeper_tid.load(std::memory_order_relaxed) != tid) area.sleeper_tid.store(tid);
        return;
      }
      // A new sleeping thread: a doorbell to a thread that does not block it would kill the
      // process (the default action of a real-time signal), so make sure before publishing.
      block_doorbell_signals();
      if (it != sleepers_.end()) {
        it->second = tid;
      } else {
        sleepers_.emplace_back(&area, tid);
      }
    }
    area.sleeper_tid.store(tid, std::memory_order_seq_cst);
  }

  void sleep(shm::WakeArea&, Deadline deadline) override {
    siginfo_t info;
    timespec left{};
    const int got = retry_eintr([&] {
      left = remaining(deadline);
      return ::sigtimedwait(&set_, &info, &left);
    });
    if (got < 0) return;  // EAGAIN: the deadline passed
    const timespec now{0, 0};
    int drained = 0;
    while (drained < kMaxDrain) {
      if (::sigtimedwait(&set_, &info, &now) < 0) break;
      ++drained;
    }
  }

  shm::WakeResult wake(shm::WakeArea& area, pid_t pid) override {
    if (pid <= 0) return shm::WakeResult::kDone;
    pid_t tid = 0;
    if (pid == own_pid_) {
      // Our own sleeper: trust our private record over the shared memory.
      std::lock_guard lock(mutex_);
      for (const auto& [a, t] : sleepers_) {
        if (a == &area) tid = t;
      }
    }
    if (tid == 0) tid = area.sleeper_tid.load(std::memory_order_acquire);
    // Nobody attached yet: the sleeper's bounded re-check covers it.
    if (tid <= 0) return shm::WakeResult::kDone;
    siginfo_t info{};
    info.si_signo = doorbell_;
    info.si_code = SI_QUEUE;  // what sigqueue() sends; the kernel refuses SI_USER from here
    info.si_pid = own_pid_;
    info.si_uid = own_uid_;
    if (::syscall(SYS_rt_tgsigqueueinfo, pid, tid, doorbell_, &info) == 0) {
      return shm::WakeResult::kDone;
    }
    if (errno == EAGAIN) {
      // The queue quota is full (possibly filled by someone else): a standard signal is
      // never refused, only merged with one already pending, which is all a doorbell needs.
      ::syscall(SYS_tgkill, pid, tid, kFallbackSignal);
    }
    // ESRCH (the thread is gone) or EPERM (not ours): there is nobody to wake.
    return shm::WakeResult::kDone;
  }

 private:
  const pid_t own_pid_;
  const uid_t own_uid_;
  const int doorbell_;
  const sigset_t set_;
  std::mutex mutex_;
  // The areas this endpoint's own threads sleep on, and their tids: at most a handful.
  std::vector<std::pair<const shm::WakeArea*, pid_t>> sleepers_;
};

}  // namespace

shm::Flavor flavor(const std::filesystem::path&) {
  // Doorbells go only to clients' threads; the server sleeps on the server bell.
  return shm::Flavor{make_sysv_source(), std::make_unique<SignalWaker>()};
}

int doorbell_signal() {
  // SIGRTMIN is where glibc's own real-time signals end; a few above it leaves room for
  // libraries that take the first ones.
  return SIGRTMIN + 3;
}

sigset_t doorbell_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, doorbell_signal());
  sigaddset(&set, kFallbackSignal);
  return set;
}

void block_doorbell_signals() {
  const sigset_t set = doorbell_signals();
  const int err = ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
  if (err != 0) throw_system_error("pthread_sigmask", "doorbell signals", err);
}

std::unique_ptr<shm::Waker> make_waker() {
  return std::make_unique<SignalWaker>();
}

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  if (options.access.kind() != AccessPolicy::Kind::kUser) {
    throw std::runtime_error(
        "--transport=signal works only with --access=user: an unprivileged process may send "
        "signals only to processes of its own account");
  }
  return shm::listen(options, "signal", flavor(options.dir));
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  return shm::connect(options, flavor(options.dir));
}

std::vector<std::string> cleanup(const CleanupOptions& options) {
  // A server from before the door published its keyed control segment's id; the stale
  // instance.json may also be another backend's, which names no SysV key file.
  int ctl = -1;
  const auto& o = options.objects;
  if (o.is_object() && o.contains("sysv_key_file") && o.contains("ctl") && o["ctl"].is_string()) {
    ctl = parse_shmid(o["ctl"].get<std::string>()).value_or(-1);
  }
  return remove_sysv_leftovers(options.dir, options.dead_server_pid, ctl, kPreDoorCtlBytes,
                               sizeof(shm::ClientBlock));
}

}  // namespace chat::transport::sig

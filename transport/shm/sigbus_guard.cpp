#include "transport/shm/sigbus_guard.hpp"

#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>

#include "common/error.hpp"

namespace chat::transport::shm {
namespace {

// Every client mapping of every endpoint of the process. The handler reads them with plain
// atomic loads (async-signal-safe); registration takes a mutex the handler never touches.
constexpr std::size_t kSlots = 4096;

struct Range {
  std::atomic<std::uintptr_t> base{0};  // 0: free
  std::atomic<std::size_t> bytes{0};
  std::atomic<bool> tripped{false};
};

Range g_ranges[kSlots];
std::mutex g_mutex;
bool g_installed = false;  // once: afterwards, only if someone replaced it
struct sigaction g_previous {};

void on_sigbus(int signo, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  for (Range& r : g_ranges) {
    const std::uintptr_t base = r.base.load(std::memory_order_acquire);
    if (base == 0 || addr < base || addr - base >= r.bytes.load(std::memory_order_relaxed)) {
      continue;
    }
    const int saved = errno;
    // The pages the client took away become private zero pages: the access that faulted is
    // retried on return and succeeds; the engine sees `tripped` and drops the client.
    ::mmap(reinterpret_cast<void*>(base), r.bytes.load(std::memory_order_relaxed),
           PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    r.tripped.store(true, std::memory_order_release);
    errno = saved;
    return;
  }
  // Not ours: what would have happened without us.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(signo, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN &&
      g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(signo);
    return;
  }
  // Default action: restore it; the faulting access is retried and kills the process.
  ::signal(SIGBUS, SIG_DFL);
}

// Installs the handler unless it is in place: someone may have replaced it since (a test
// framework that sets its own around every test, say); then theirs becomes the one we chain to.
void install_locked() {
  struct sigaction current {};
  if (g_installed && ::sigaction(SIGBUS, nullptr, &current) == 0 &&
      (current.sa_flags & SA_SIGINFO) != 0 && current.sa_sigaction == on_sigbus) {
    return;
  }
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGBUS, &sa, &g_previous) != 0) throw_system_error("sigaction", "SIGBUS guard");
  g_installed = true;
}

}  // namespace

SigbusGuard::SigbusGuard(void* base, std::size_t bytes) {
  std::lock_guard lock(g_mutex);
  install_locked();
  for (std::size_t i = 0; i < kSlots; ++i) {
    Range& r = g_ranges[i];
    if (r.base.load(std::memory_order_relaxed) != 0) continue;
    r.tripped.store(false, std::memory_order_relaxed);
    r.bytes.store(bytes, std::memory_order_relaxed);
    r.base.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_release);
    slot_ = i;
    return;
  }
  throw_system_error("register", "SIGBUS guard", ENOSPC);
}

SigbusGuard::~SigbusGuard() {
  std::lock_guard lock(g_mutex);
  g_ranges[slot_].base.store(0, std::memory_order_release);
}

bool SigbusGuard::tripped() const {
  return g_ranges[slot_].tripped.load(std::memory_order_acquire);
}

}  // namespace chat::transport::shm

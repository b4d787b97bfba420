#include "transport/pid_watch.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/error.hpp"
#include "common/event_fd.hpp"

namespace chat::transport {

UniqueFd open_pidfd(pid_t pid) {
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!fd && errno != ESRCH) throw_system_error("pidfd_open", "pid " + std::to_string(pid));
  return fd;
}

bool pidfd_exited(int pidfd, std::chrono::milliseconds wait) {
  pollfd p{pidfd, POLLIN, 0};
  return retry_eintr([&] { return ::poll(&p, 1, static_cast<int>(wait.count())); }) > 0;
}

PidWatcher::PidWatcher(std::function<void(std::uint64_t)> on_exit)
    : on_exit_(std::move(on_exit)),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      stop_(make_eventfd("pid watcher")) {
  if (!epoll_) throw_system_error("epoll_create1", "pid watcher");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = UINT64_MAX;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, stop_.get(), &ev) != 0) {
    throw_system_error("epoll_ctl", "pid watcher");
  }
  thread_ = std::thread([this] { run(); });
}

PidWatcher::~PidWatcher() {
  signal_eventfd(stop_.get());
  thread_.join();
}

void PidWatcher::watch(std::uint64_t key, UniqueFd pidfd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = key;
  std::lock_guard lock(mutex_);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, pidfd.get(), &ev) != 0) {
    throw_system_error("epoll_ctl", "pidfd");
  }
  watched_[key] = std::move(pidfd);
}

void PidWatcher::unwatch(std::uint64_t key) {
  std::lock_guard callback(callback_mutex_);
  std::lock_guard lock(mutex_);
  const auto it = watched_.find(key);
  if (it == watched_.end()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.get(), nullptr);
  watched_.erase(it);
}

void PidWatcher::run() {
  epoll_event events[16];
  for (;;) {
    const int n = ::epoll_wait(epoll_.get(), events, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // cannot happen with a valid epoll fd; nothing sensible left to do
    }
    for (int i = 0; i < n; ++i) {
      const std::uint64_t key = events[i].data.u64;
      if (key == UINT64_MAX) return;
      std::lock_guard callback(callback_mutex_);
      {
        std::lock_guard lock(mutex_);
        const auto it = watched_.find(key);
        if (it == watched_.end()) continue;  // unwatched meanwhile
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.get(), nullptr);
        watched_.erase(it);
      }
      on_exit_(key);
    }
  }
}

}  // namespace chat::transport

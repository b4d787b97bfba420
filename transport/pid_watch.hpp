// Process liveness that survives PID reuse: pidfds, and a thread that reports deaths.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/unique_fd.hpp"

namespace chat::transport {

// Opens a pidfd for `pid`; an empty UniqueFd if the process does not exist (ESRCH). Throws
// std::system_error on other failures.
UniqueFd open_pidfd(pid_t pid);

// True if the process behind `pidfd` has exited (the pidfd polls readable), or does within
// `wait`.
bool pidfd_exited(int pidfd, std::chrono::milliseconds wait = {});

// How long a peer whose connection just ended may still look alive: a dying process closes its
// files a moment before its pidfd turns ready. Wait this long before calling an end a close.
inline constexpr std::chrono::milliseconds kDeathSettle{200};

// Watches processes on a thread of its own and calls `on_exit(key)` on that thread, once, when
// a watched process exits. watch()/unwatch() are thread-safe; after unwatch(key) returns,
// on_exit(key) is not running and will not run.
class PidWatcher {
 public:
  explicit PidWatcher(std::function<void(std::uint64_t key)> on_exit);
  ~PidWatcher();
  PidWatcher(const PidWatcher&) = delete;
  PidWatcher& operator=(const PidWatcher&) = delete;

  // Starts watching `pidfd` (ownership passes to the watcher) under `key`.
  void watch(std::uint64_t key, UniqueFd pidfd);
  void unwatch(std::uint64_t key);

 private:
  void run();
  std::function<void(std::uint64_t)> on_exit_;
  UniqueFd epoll_;
  UniqueFd stop_;  // eventfd
  std::mutex mutex_;
  std::mutex callback_mutex_;  // held while on_exit_ runs; unwatch() takes it to wait it out
  std::unordered_map<std::uint64_t, UniqueFd> watched_;
  std::thread thread_;
};

}  // namespace chat::transport

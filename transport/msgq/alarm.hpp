// What a reader blocked in msgrcv cannot do itself: be woken (QueueBell), time out or notice a
// process's death (Alarm). The client's receive() blocks in msgrcv on its down queue; these
// put a wake-up message into that same queue when something else needs it.
#pragma once

#include <poll.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <thread>

#include "common/time.hpp"
#include "common/unique_fd.hpp"

namespace chat::transport::msgq {

// poll() with sub-millisecond precision; `deadline` may be kNoDeadline.
int poll_until(pollfd* fds, nfds_t n, Deadline deadline);

// Wake-ups for a reader blocked in msgrcv on `queue`, put into that queue by its own process:
// at most one at a time, so that they cannot pile up. Whoever rings sets its flag first; the
// reader looks at its flags after taking the wake-up and before each blocking msgrcv. Any thread.
class QueueBell {
 public:
  QueueBell(int queue, std::uint64_t secret) : queue_(queue), secret_(secret) {}

  void ring();

  // For the reader, given a kWake message it took: true if it was ours (one may be sent again).
  bool take(std::span<const std::byte> text);

 private:
  static constexpr auto kStolenAfter = std::chrono::seconds(1);
  const int queue_;
  const std::uint64_t secret_;
  std::atomic<bool> queued_{false};       // a wake-up is in the queue (or on its way)
  std::atomic<Clock::rep> queued_at_{0};  // when, on Clock
  std::atomic<std::uint64_t> requests_{0};
};

// On a thread of its own: calls `ring` once the deadline last given to set() has passed (and
// each second after, until set() is called again: a stolen ring must not leave the reader
// asleep for good), and `exited` once the process behind `pidfd` (if not -1; not owned) has
// exited. Both run on that thread. Costs nothing per message: set() only disturbs the thread
// when the new deadline is earlier than the one it sleeps until.
class Alarm {
 public:
  explicit Alarm(std::function<void()> ring, int pidfd = -1, std::function<void()> exited = {});
  ~Alarm();
  Alarm(const Alarm&) = delete;
  Alarm& operator=(const Alarm&) = delete;

  // Rings once `due` has passed (kNoDeadline: never), instead of at the previous deadline, and
  // again every kRingAgain until the next set().
  void set(Deadline due);

 private:
  void run();

  static constexpr auto kRingAgain = std::chrono::seconds(1);
  const std::function<void()> ring_;
  const std::function<void()> exited_;
  const int pidfd_;
  UniqueFd bell_;     // eventfd: an earlier deadline, or stop
  std::mutex mutex_;  // guards the three below
  Deadline due_ = kNoDeadline;
  Deadline sleeping_until_ = Deadline::min();
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest is ready
};

}  // namespace chat::transport::msgq

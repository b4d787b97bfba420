#include "transport/msgq/alarm.hpp"

#include <cstring>

#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "transport/msgq/stream.hpp"
#include "transport/msgq/sysv_queue.hpp"
#include "transport/msgq/wire.hpp"

namespace chat::transport::msgq {
namespace {

timespec timespec_until(Deadline d) {
  const auto left = std::max(d - Clock::now(), Clock::duration::zero());
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(left);
  return {
      static_cast<time_t>(s.count()),
      static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(left - s).count())};
}

}  // namespace

int poll_until(pollfd* fds, nfds_t n, Deadline deadline) {
  return retry_eintr([&] {
    if (deadline == kNoDeadline) return ::ppoll(fds, n, nullptr, nullptr);
    const timespec ts = timespec_until(deadline);
    return ::ppoll(fds, n, &ts, nullptr);
  });
}

void QueueBell::ring() {
  requests_.fetch_add(1);
  // Any process of the queue's account may read it: a wake-up sent over kStolenAfter ago that
  // is no longer in an empty queue was stolen, and waiting on for it would leave the reader
  // asleep for good. Send another.
  if (queued_.load() && Clock::now().time_since_epoch().count() - queued_at_.load() >
                            std::chrono::duration_cast<Clock::duration>(kStolenAfter).count()) {
    msqid_ds ds{};
    if (stat_queue(queue_, ds) && ds.msg_qnum == 0) queued_ = false;
  }
  while (!queued_.exchange(true)) {
    queued_at_ = Clock::now().time_since_epoch().count();
    const std::uint64_t seen = requests_.load();
    const int err = stream::put_value(queue_, wire::kWake, wire::WakeMsg{secret_});
    if (err == 0) return;
    // The queue is full, so its reader is not blocked and looks at its flags before it blocks
    // again (or the queue is gone). But whoever rang since `seen` counted on this wake-up and
    // set its flag maybe too late for that: try again for them.
    queued_ = false;
    if (err != EAGAIN || requests_.load() == seen) return;
  }
}

bool QueueBell::take(std::span<const std::byte> text) {
  wire::WakeMsg w;
  if (text.size() != sizeof w) return false;
  std::memcpy(&w, text.data(), sizeof w);
  if (w.secret != secret_) return false;
  queued_ = false;
  return true;
}

Alarm::Alarm(std::function<void()> ring, int pidfd, std::function<void()> exited)
    : ring_(std::move(ring)),
      exited_(std::move(exited)),
      pidfd_(pidfd),
      bell_(make_eventfd("msgq alarm")),
      thread_([this] { run(); }) {}

Alarm::~Alarm() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  signal_eventfd(bell_.get());
  thread_.join();
}

void Alarm::set(Deadline due) {
  bool earlier;
  {
    std::lock_guard lock(mutex_);
    due_ = due;
    earlier = due < sleeping_until_;
  }
  if (earlier) signal_eventfd(bell_.get());
}

void Alarm::run() {
  bool watching = pidfd_ >= 0;
  std::unique_lock lock(mutex_);
  while (!stop_) {
    if (due_ != kNoDeadline && Clock::now() >= due_) {
      // Again in a while unless the reader comes back with a new deadline first: the ring
      // may have been stolen from the queue (see QueueBell::ring).
      due_ = Clock::now() + kRingAgain;
      lock.unlock();
      ring_();
      lock.lock();
      continue;
    }
    const Deadline until = due_;
    sleeping_until_ = until;
    lock.unlock();
    pollfd p[2] = {{bell_.get(), POLLIN, 0}, {pidfd_, POLLIN, 0}};
    poll_until(p, watching ? 2 : 1, until);
    if (p[0].revents != 0) drain_eventfd(bell_.get());
    if (watching && p[1].revents != 0) {
      watching = false;
      exited_();
    }
    lock.lock();
    sleeping_until_ = Deadline::min();  // awake: reads due_ before it sleeps again
  }
}

}  // namespace chat::transport::msgq

// Clocks: deadlines on the monotonic clock, wall time for message timestamps.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace chat {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC on Linux
using Deadline = Clock::time_point;

inline Deadline deadline_after(Clock::duration d) {
  return Clock::now() + d;
}
inline constexpr Deadline kNoDeadline = Deadline::max();

// `d` as an absolute CLOCK_MONOTONIC timespec (for pthread_cond_clockwait, sem_clockwait...).
timespec to_monotonic_timespec(Deadline d);

// Milliseconds from now until `d`, clamped to [0, INT_MAX]; -1 for kNoDeadline (poll style).
int poll_timeout_ms(Deadline d);

// Wall-clock time in Unix epoch milliseconds.
std::int64_t now_unix_ms();

// RFC 3339 UTC with milliseconds, e.g. "2026-11-25T14:00:57.123Z".
std::string format_rfc3339(std::int64_t unix_ms);

}  // namespace chat

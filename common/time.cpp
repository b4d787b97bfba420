#include "common/time.hpp"

#include <climits>
#include <cstdio>

namespace chat {

timespec to_monotonic_timespec(Deadline d) {
  if (d == kNoDeadline) return timespec{std::numeric_limits<time_t>::max() / 2, 0};
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(d.time_since_epoch()).count();
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  return ts;
}

int poll_timeout_ms(Deadline d) {
  if (d == kNoDeadline) return -1;
  const auto left = d - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

std::int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string format_rfc3339(std::int64_t unix_ms) {
  const time_t secs = static_cast<time_t>(unix_ms / 1000);
  const int millis = static_cast<int>(unix_ms % 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                millis < 0 ? 0 : millis);
  return buf;
}

}  // namespace chat

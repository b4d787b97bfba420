// Warnings about what peers send, rate-limited: garbage must not flood the log either.
#pragma once

#include <string>

#include "common/time.hpp"

namespace chat {
class Logger;
}

namespace chat::transport {

// Passes on at most kBurst warnings a second, each prefixed "<prefix>: ", and says how many it
// held back when the next second begins. Not thread-safe: one per I/O thread.
class WarnLimiter {
 public:
  // `logger` may be null (warnings are dropped); it must outlive the limiter.
  WarnLimiter(const Logger* logger, std::string prefix);
  void operator()(const std::string& message);

 private:
  static constexpr int kBurst = 20;
  const Logger* logger_;
  std::string prefix_;
  Clock::time_point window_{};
  int count_ = 0;
  int suppressed_ = 0;
};

}  // namespace chat::transport

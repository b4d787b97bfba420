#include "transport/warn_limiter.hpp"

#include "common/log.hpp"

namespace chat::transport {

WarnLimiter::WarnLimiter(const Logger* logger, std::string prefix)
    : logger_(logger), prefix_(std::move(prefix) + ": ") {}

void WarnLimiter::operator()(const std::string& message) {
  if (logger_ == nullptr) return;
  const auto now = Clock::now();
  if (now - window_ >= std::chrono::seconds(1)) {
    if (suppressed_ > 0) {
      logger_->warn(prefix_ + std::to_string(suppressed_) + " similar warnings suppressed");
    }
    window_ = now;
    count_ = 0;
    suppressed_ = 0;
  }
  if (count_++ < kBurst) {
    logger_->warn(prefix_ + message);
  } else {
    ++suppressed_;
  }
}

}  // namespace chat::transport

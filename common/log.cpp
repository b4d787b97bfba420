#include "common/log.hpp"

#include <unistd.h>

#include "common/time.hpp"

namespace chat {

bool parse_log_level(std::string_view s, LogLevel& out) {
  if (s == "debug") return out = LogLevel::kDebug, true;
  if (s == "info") return out = LogLevel::kInfo, true;
  if (s == "warn") return out = LogLevel::kWarn, true;
  if (s == "error") return out = LogLevel::kError, true;
  return false;
}

void Logger::log(LogLevel level, std::string_view message) const {
  if (!enabled(level)) return;
  static constexpr std::string_view kNames[] = {"debug", "info", "warn", "error"};
  std::string line = format_rfc3339(now_unix_ms());
  line += ' ';
  line += program_;
  line += ' ';
  line += kNames[static_cast<int>(level)];
  line += ": ";
  line += message;
  line += '\n';
  std::string_view rest = line;
  while (!rest.empty()) {
    const ssize_t n = ::write(fd_, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere left to report a logging failure
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace chat

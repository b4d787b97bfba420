#include "common/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "common/time.hpp"

namespace chat {

bool parse_log_level(std::string_view s, LogLevel& out) {
  if (s == "debug") return out = LogLevel::kDebug, true;
  if (s == "info") return out = LogLevel::kInfo, true;
  if (s == "warn") return out = LogLevel::kWarn, true;
  if (s == "error") return out = LogLevel::kError, true;
  return false;
}

bool is_journal_stream(int fd) {
  const char* env = std::getenv("JOURNAL_STREAM");
  if (env == nullptr) return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return false;
  return std::string_view(env) == std::to_string(st.st_dev) + ":" +
                                      std::to_string(static_cast<unsigned long long>(st.st_ino));
}

void Logger::log(LogLevel level, std::string_view message) const {
  if (!enabled(level)) return;
  std::string line;
  if (journal_) {
    // syslog(3) priorities: debug 7, info 6, warning 4, err 3.
    static constexpr std::string_view kPriorities[] = {"<7>", "<6>", "<4>", "<3>"};
    line = kPriorities[static_cast<int>(level)];
  } else {
    static constexpr std::string_view kNames[] = {"debug", "info", "warn", "error"};
    line = format_rfc3339(now_unix_ms());
    line += ' ';
    line += program_;
    line += ' ';
    line += kNames[static_cast<int>(level)];
    line += ": ";
  }
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

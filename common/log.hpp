// Logger: one line per event on stderr, with a timestamp and a level; or, when stderr is
// systemd's journal, with a syslog priority prefix ("<6>") that journald turns into the entry's
// priority (it adds the time and the program itself).
#pragma once

#include <string>
#include <string_view>

namespace chat {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug", "info", "warn", "error"; false if `s` is none of them.
bool parse_log_level(std::string_view s, LogLevel& out);

// True if `fd` is the stream systemd connected to the journal: $JOURNAL_STREAM holds that
// stream's "DEVICE:INODE", which must be `fd`'s own (a service's stderr redirected elsewhere
// keeps the variable but not the stream).
bool is_journal_stream(int fd);

// Writes each line with one write(2) so lines from several threads never interleave.
// Thread-safe; cheap to pass by reference; owns no global state.
class Logger {
 public:
  explicit Logger(std::string program, LogLevel min = LogLevel::kInfo, int fd = 2)
      : program_(std::move(program)), min_(min), fd_(fd), journal_(is_journal_stream(fd)) {}

  bool enabled(LogLevel level) const { return level >= min_; }
  void log(LogLevel level, std::string_view message) const;
  void debug(std::string_view m) const { log(LogLevel::kDebug, m); }
  void info(std::string_view m) const { log(LogLevel::kInfo, m); }
  void warn(std::string_view m) const { log(LogLevel::kWarn, m); }
  void error(std::string_view m) const { log(LogLevel::kError, m); }

 private:
  std::string program_;
  LogLevel min_;
  int fd_;
  bool journal_;
};

}  // namespace chat

// Child: one process chat-bench started (a peer, chatd, a zeromq broker), with pipes to its
// stdin and stdout. Only ever signals and reaps its own pid.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/time.hpp"
#include "common/unique_fd.hpp"

namespace chat::bench {

class Child {
 public:
  // Starts argv[0] with argv, a pipe on stdin and one on stdout; stderr is shared with ours
  // (the progress channel). The child starts with no blocked signals and default handlers.
  // Throws std::system_error if it cannot be started.
  explicit Child(std::vector<std::string> argv);
  // Closes the child's stdin and waits up to 2 s for it to exit; then kills it (SIGKILL, by its
  // pid). Always reaps it.
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

  // Writes one line to the child's stdin; false if it has closed it (it exited).
  bool send_line(std::string_view line);
  // Closes the child's stdin: every peer takes end-of-file as "clean up and exit".
  void close_stdin() { stdin_.reset(); }
  // The next line the child writes to stdout (without the newline); nullopt on end-of-file
  // or once `deadline` passes.
  std::optional<std::string> read_line(Deadline deadline);
  // Waits for a line starting with `prefix`, skipping others; nullopt as read_line.
  std::optional<std::string> expect(std::string_view prefix, Deadline deadline);

  void signal(int signo);
  // Waits for the exit until `deadline`; the exit code, 128+signal if killed, nullopt on
  // timeout.
  std::optional<int> wait(Deadline deadline);
  bool running();

  // CPU time (user + system, all threads) the child has used so far, in ns; -1 if unknown.
  std::int64_t cpu_ns() const;

 private:
  std::string name_;
  pid_t pid_ = -1;
  std::optional<int> status_;
  UniqueFd stdin_;
  UniqueFd stdout_;
  std::string buffer_;
  bool eof_ = false;
};

// CPU time of process `pid` (all its threads, also those that ended) in ns; -1 if unknown.
std::int64_t process_cpu_ns(pid_t pid);

// CPU time of the calling process in ns.
std::int64_t own_cpu_ns();

// The monotonic clock (shared by every process on the host) in ns.
std::int64_t now_ns();

}  // namespace chat::bench

// Test support: private runtime dirs, real child processes, and checks that nothing is left.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "transport/transport.hpp"

namespace chat::test {

using namespace std::chrono_literals;

// Path of a binary built by this project ("chatd", "chat", "transport_peer").
std::filesystem::path binary(const std::string& name);

// A fresh runtime base dir under /tmp and a unique instance name, for one test. Removes the
// base dir (recursively) when destroyed.
class TempRuntime {
 public:
  TempRuntime();
  ~TempRuntime();
  TempRuntime(const TempRuntime&) = delete;
  TempRuntime& operator=(const TempRuntime&) = delete;

  const std::filesystem::path& base() const { return base_; }
  const std::string& instance() const { return instance_; }
  std::filesystem::path dir() const { return base_ / instance_; }
  // "--runtime-dir=BASE", "--instance=NAME"
  std::vector<std::string> args() const;
  // When it was made (a second early): nothing older than this can be the test's.
  std::time_t created() const { return created_; }

 private:
  std::filesystem::path base_;
  std::string instance_;
  std::time_t created_ = std::time(nullptr) - 1;
};

// A child process with its stdin, stdout and stderr connected to pipes. Output is collected
// by background threads. Destroying a running Process kills it (SIGKILL, by pid) and reaps it.
class Process {
 public:
  explicit Process(std::vector<std::string> argv, std::map<std::string, std::string> env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void write(const std::string& data);  // to stdin
  void close_stdin();
  void kill(int signo);
  // Waits for the exit; returns the exit code, 128+signal if killed, nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // wait(), with -1 for a timeout: easy to compare in BOOST_TEST.
  int exit_code(std::chrono::milliseconds timeout) { return wait(timeout).value_or(-1); }
  bool running();

  std::string out() const;
  std::string err() const;
  std::vector<std::string> out_lines() const;
  // Waits until `pred(stdout so far)` holds; false on timeout.
  bool wait_out(const std::function<bool(const std::string&)>& pred,
                std::chrono::milliseconds timeout);
  bool wait_out_contains(const std::string& needle, std::chrono::milliseconds timeout);
  bool wait_err_contains(const std::string& needle, std::chrono::milliseconds timeout);

 private:
  void collect(int fd, std::string& into);
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  std::optional<int> status_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string out_, err_;
  std::thread out_thread_, err_thread_;
};

// Starts chatd on `rt` with extra args and waits until it serves (instance.json published and
// the lock held). Fails the test if it does not within 5 s.
std::unique_ptr<Process> start_chatd(const TempRuntime& rt, const std::string& transport,
                                     std::vector<std::string> extra = {});

// Whatever of this test is left behind: /dev/shm entries named after the instance dir,
// SysV objects created or last used by any of `pids`, and files under the runtime base.
std::vector<std::string> leftovers(const TempRuntime& rt, const std::vector<pid_t>& pids);

// Checks (BOOST_CHECK: the test goes on) that leftovers() finds nothing; names the first if not.
void check_no_leftovers(const TempRuntime& rt, const std::vector<pid_t>& pids);

// A pid that certainly names no process right now: a child of ours, already reaped.
pid_t dead_pid();

// The kernel's scheduling state of thread `tid` of this process ('R', 'S', 'D'...), 0 if gone.
char thread_state(pid_t tid);

// Waits until thread `tid` of this process is asleep in the kernel (state S: blocked on a futex,
// in poll(), msgrcv(), sigtimedwait()...) on several looks in a row: the positive event that it
// got as far as its wait. False if it has not by `timeout`, or is gone (it did not block).
bool wait_thread_sleeping(pid_t tid, std::chrono::milliseconds timeout);

// The same for every thread of this process but the calling one: all of them have done what
// they could and wait. False on timeout.
bool wait_others_sleeping(std::chrono::milliseconds timeout);

// The lines of `text`.
std::vector<std::string> lines_of(const std::string& text);

}  // namespace chat::test

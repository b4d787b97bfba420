// Where one benchmark run lives: a private runtime base dir with a unique instance name, the
// binaries it starts, and the check that nothing is left behind.
#pragma once

#include <sys/types.h>

#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

namespace chat::bench {

// Paths of the programs a run starts.
struct Binaries {
  std::filesystem::path self;   // chat-bench itself, re-executed as a peer
  std::filesystem::path chatd;  // from the same build tree
};

// A fresh runtime base under /tmp (0700) and an instance name nobody else uses. Removes the
// base dir (recursively) when destroyed.
class TempRuntime {
 public:
  explicit TempRuntime(const std::string& tag);
  ~TempRuntime();
  TempRuntime(const TempRuntime&) = delete;
  TempRuntime& operator=(const TempRuntime&) = delete;

  const std::filesystem::path& base() const { return base_; }
  const std::string& instance() const { return instance_; }
  std::filesystem::path dir() const { return base_ / instance_; }
  // "--runtime-dir=BASE", "--instance=NAME"
  std::vector<std::string> args() const;

  // Records a process started for this run, for the SysV part of leftovers().
  void started(pid_t pid) { pids_.push_back(pid); }
  // Whatever the run left: /dev/shm entries carrying the instance's tag, SysV objects created
  // or last used by a process of this run, and files under the base other than `keep`
  // (names of files the bench itself wrote there). Call once every process has exited.
  std::vector<std::string> leftovers(const std::vector<std::string>& keep = {}) const;

 private:
  std::filesystem::path base_;
  std::string instance_;
  std::vector<pid_t> pids_;
  std::time_t created_ = std::time(nullptr) - 1;  // nothing older can be ours
};

}  // namespace chat::bench

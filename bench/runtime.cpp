#include "bench/runtime.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/error.hpp"
#include "transport/names.hpp"

namespace chat::bench {
namespace fs = std::filesystem;
namespace {

// Rows of /proc/sysvipc/FILE as whitespace-split fields, header skipped.
std::vector<std::vector<std::string>> sysv_rows(const std::string& file) {
  std::ifstream in("/proc/sysvipc/" + file);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::vector<std::string> fields;
    for (std::string f; ss >> f;) fields.push_back(f);
    rows.push_back(std::move(fields));
  }
  return rows;
}

}  // namespace

TempRuntime::TempRuntime(const std::string& tag) {
  char tmpl[] = "/tmp/chat-bench.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw_system_error("mkdtemp", tmpl);
  base_ = tmpl;
  // mkdtemp's random suffix makes the name unique too (and /dev/shm and SysV names derive
  // from the whole path).
  instance_ = "b" + base_.string().substr(base_.string().size() - 6) + "-" + tag;
  if (instance_.size() > 32) instance_.resize(32);
}

TempRuntime::~TempRuntime() {
  std::error_code ec;
  fs::remove_all(base_, ec);
}

std::vector<std::string> TempRuntime::args() const {
  return {"--runtime-dir=" + base_.string(), "--instance=" + instance_};
}

std::vector<std::string> TempRuntime::leftovers(const std::vector<std::string>& keep) const {
  std::vector<std::string> found;
  std::error_code ec;
  const std::string tag = transport::instance_tag(dir());
  for (const auto& e : fs::directory_iterator("/dev/shm", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find(tag) != std::string::npos) found.push_back("/dev/shm/" + name);
  }
  const auto ours = [&](const std::string& pid) {
    return std::any_of(pids_.begin(), pids_.end(),
                       [&](pid_t p) { return pid == std::to_string(p); });
  };
  // shm: key shmid perms size cpid lpid ...; msg: key msqid perms cbytes qnum lspid lrpid ...;
  // sem: key semid perms nsems uid gid cuid cgid otime ctime (no pids: not checked).
  for (const auto& row : sysv_rows("shm")) {
    if (row.size() > 5 && (ours(row[4]) || ours(row[5]))) found.push_back("SysV shm id " + row[1]);
  }
  for (const auto& row : sysv_rows("msg")) {
    if (row.size() > 6 && (ours(row[5]) || ours(row[6]))) found.push_back("SysV msg id " + row[1]);
  }
  for (const auto& e : fs::recursive_directory_iterator(base_, ec)) {
    const std::string name = e.path().filename().string();
    if (std::find(keep.begin(), keep.end(), name) == keep.end()) {
      found.push_back(e.path().string());
    }
  }
  return found;
}

}  // namespace chat::bench

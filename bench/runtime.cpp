#include "bench/runtime.hpp"

#include <unistd.h>

#include <algorithm>

#include "common/error.hpp"
#include "transport/names.hpp"

namespace chat::bench {
namespace fs = std::filesystem;

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
  std::vector<std::string> found = transport::leftover_ipc_objects(dir(), pids_, created_);
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(base_, ec)) {
    const std::string name = e.path().filename().string();
    if (std::find(keep.begin(), keep.end(), name) == keep.end()) {
      found.push_back(e.path().string());
    }
  }
  return found;
}

}  // namespace chat::bench

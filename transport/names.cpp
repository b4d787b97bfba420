#include "transport/names.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/error.hpp"

namespace chat::transport {
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

std::string instance_tag(const std::filesystem::path& dir) {
  std::error_code ec;
  const std::string path = std::filesystem::absolute(dir, ec).lexically_normal().string();
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (unsigned char c : path) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%u.%016llx", static_cast<unsigned>(::geteuid()),
                static_cast<unsigned long long>(h));
  return buf;
}

std::vector<std::string> leftover_ipc_objects(const std::filesystem::path& dir,
                                              const std::vector<pid_t>& pids, std::time_t since) {
  std::vector<std::string> found;
  std::error_code ec;
  const std::string tag = instance_tag(dir);
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find(tag) != std::string::npos) found.push_back("/dev/shm/" + name);
  }
  const auto ours = [&](const std::string& pid) {
    return std::any_of(pids.begin(), pids.end(), [&](pid_t p) { return pid == std::to_string(p); });
  };
  // Both tables have the time of the last change (creation, IPC_SET) in column 13.
  constexpr std::size_t kCtime = 13;
  const auto recent = [&](const std::vector<std::string>& row) {
    return row.size() > kCtime && std::strtoll(row[kCtime].c_str(), nullptr, 10) >= since;
  };
  // shm: key shmid perms size cpid lpid ...; msg: key msqid perms cbytes qnum lspid lrpid ...;
  // sem: key semid perms nsems uid gid cuid cgid otime ctime (no pids: not checked).
  for (const auto& row : sysv_rows("shm")) {
    if (recent(row) && (ours(row[4]) || ours(row[5]))) found.push_back("SysV shm id " + row[1]);
  }
  for (const auto& row : sysv_rows("msg")) {
    if (recent(row) && (ours(row[5]) || ours(row[6]))) found.push_back("SysV msg id " + row[1]);
  }
  return found;
}

}  // namespace chat::transport

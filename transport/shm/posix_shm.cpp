#include "transport/shm/posix_shm.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport/names.hpp"

namespace chat::transport::shm {

std::vector<std::string> remove_posix_shm_leftovers(const std::filesystem::path& dir) {
  const std::string prefix = "ipchat." + instance_tag(dir) + ".";
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) != 0 || st.st_uid != ::geteuid()) continue;
    if (::shm_unlink(("/" + name).c_str()) == 0) removed.push_back("/dev/shm/" + name);
  }
  return removed;
}

}  // namespace chat::transport::shm

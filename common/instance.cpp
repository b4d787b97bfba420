#include "common/instance.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "common/error.hpp"
#include "common/validate.hpp"

namespace chat {
namespace fs = std::filesystem;
namespace {

constexpr char kLockFile[] = "lock";
constexpr char kInfoFile[] = "instance.json";

// Creates `dir` if missing and checks it is ours and writable by us alone. With `exact`, its
// mode (and, for a group policy, its group) become exactly what `access` needs; without, only
// the search bits the policy needs are added (the base may hold other instances).
void make_dir(const fs::path& dir, const AccessPolicy& access, bool exact) {
  const bool created = ::mkdir(dir.c_str(), 0700) == 0;
  if (!created && errno != EEXIST) throw_system_error("mkdir", dir.string());
  check_private_dir(dir);
  const bool group = access.kind() == AccessPolicy::Kind::kGroup;
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) throw_system_error("lstat", dir.string());
  mode_t mode = access.dir_mode();
  if (exact || created) {
    if (group && st.st_gid != access.group() &&
        ::lchown(dir.c_str(), static_cast<uid_t>(-1), access.group()) != 0) {
      throw_system_error(
          "chown to group " + access.group_name() + " (chatd's account must be a member of it)",
          dir.string());
    }
  } else {
    // A base we did not create for this policy: add the search bit the policy needs — the
    // group's if the base belongs to the policy's group, else everyone's (a base holds only
    // instance dirs, each guarded by its own mode).
    mode_t search = mode & 0011;
    if (group && st.st_gid != access.group()) search = 0001;
    mode = (st.st_mode & 07777) | search;
  }
  // mkdir honours the umask, which may have taken bits we need; set them exactly.
  if ((st.st_mode & 07777) != mode && ::chmod(dir.c_str(), mode) != 0) {
    throw_system_error("chmod", dir.string());
  }
}

}  // namespace

fs::path resolve_runtime_base(const std::string& runtime_dir) {
  if (!runtime_dir.empty()) return runtime_dir;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && xdg[0] == '/') {
    return fs::path(xdg) / "ipchat";
  }
  return "/tmp/ipchat-" + std::to_string(::geteuid());
}

nlohmann::json to_json(const InstanceInfo& info) {
  return {{"instance", info.instance},
          {"transport", info.transport},
          {"pid", info.pid},
          {"protocol", info.protocol},
          {"objects", info.objects}};
}

InstanceInfo instance_info_from_json(const nlohmann::json& j) {
  InstanceInfo info;
  try {
    info.instance = j.at("instance").get<std::string>();
    info.transport = j.at("transport").get<std::string>();
    info.pid = j.at("pid").get<pid_t>();
    info.protocol = j.at("protocol").get<int>();
    info.objects = j.value("objects", nlohmann::json::object());
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("instance.json: ") + e.what());
  }
  return info;
}

void check_private_dir(const fs::path& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) throw_system_error("lstat", dir.string());
  if (S_ISLNK(st.st_mode)) {
    throw UsageError("runtime dir " + dir.string() + " is a symlink; refusing to use it");
  }
  if (!S_ISDIR(st.st_mode)) throw UsageError("runtime dir " + dir.string() + " is not a directory");
  if (st.st_uid != ::geteuid()) {
    throw UsageError("runtime dir " + dir.string() + " is owned by uid " +
                     std::to_string(st.st_uid) + ", not by us; refusing to use it");
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    throw UsageError("runtime dir " + dir.string() +
                     " is writable by group or others; refusing to use it (chmod 700 it)");
  }
}

UniqueFd open_private_file(const fs::path& path, int flags, mode_t mode) {
  UniqueFd fd(
      retry_eintr([&] { return ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode); }));
  if (!fd) throw_system_error("open", path.string());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_system_error("fstat", path.string());
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
    throw UsageError(path.string() + " is not a regular file owned by us; refusing to use it");
  }
  return fd;
}

namespace {

// The exclusive lock a server holds for its lifetime. find_live_instance() takes a shared
// lock for a moment to probe it, so one refusal is not proof of a server: only a lock still
// held after kProbeGrace is. (Without the grace, a client probing while chatd starts made
// chatd exit "already served".)
bool try_lock_exclusive(int fd, const fs::path& path) {
  constexpr auto kProbeGrace = std::chrono::milliseconds(200);
  const auto end = std::chrono::steady_clock::now() + kProbeGrace;
  for (;;) {
    if (retry_eintr([&] { return ::flock(fd, LOCK_EX | LOCK_NB); }) == 0) return true;
    if (errno != EWOULDBLOCK) throw_system_error("flock", path.string());
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace

InstanceDir InstanceDir::acquire(const fs::path& base, const std::string& instance,
                                 const AccessPolicy& access) {
  if (!is_valid_name(instance)) {
    throw UsageError("--instance: '" + instance +
                     "' is not a valid name (1-32 of A-Z a-z 0-9 _ - .)");
  }
  make_dir(base, access, false);
  fs::path dir = base / instance;
  make_dir(dir, access, true);
  UniqueFd lock = open_private_file(dir / kLockFile, O_RDWR | O_CREAT);
  if (::fchmod(lock.get(), 0600) != 0) throw_system_error("fchmod", (dir / kLockFile).string());
  if (!try_lock_exclusive(lock.get(), dir / kLockFile)) {
    pid_t pid = 0;
    try {
      std::ifstream in(dir / kInfoFile);
      pid = instance_info_from_json(nlohmann::json::parse(in)).pid;
    } catch (const std::exception&) {
      // The live server may not have published yet; the pid is only for the message.
    }
    throw InstanceBusy("instance '" + instance + "' is already served by a running chatd" +
                           (pid > 0 ? " (pid " + std::to_string(pid) + ")" : std::string()),
                       pid);
  }
  return InstanceDir(std::move(dir), instance, std::move(lock));
}

InstanceDir::~InstanceDir() = default;

std::optional<InstanceInfo> InstanceDir::stale_info() const {
  const fs::path p = dir_ / kInfoFile;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(p, ec))) return std::nullopt;
  try {
    UniqueFd fd = open_private_file(p, O_RDONLY);
    std::ifstream in(p);
    return instance_info_from_json(nlohmann::json::parse(in));
  } catch (const std::exception&) {
    return std::nullopt;  // unreadable leftovers are removed with the rest of the directory
  }
}

void InstanceDir::publish(const InstanceInfo& info) const {
  const fs::path tmp = dir_ / "instance.json.tmp";
  const std::string text = to_json(info).dump(2) + "\n";
  {
    UniqueFd fd = open_private_file(tmp, O_WRONLY | O_CREAT | O_TRUNC);
    if (::fchmod(fd.get(), 0600) != 0) throw_system_error("fchmod", tmp.string());
    std::string_view rest = text;
    while (!rest.empty()) {
      const ssize_t n = retry_eintr([&] { return ::write(fd.get(), rest.data(), rest.size()); });
      if (n < 0) throw_system_error("write", tmp.string());
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  if (::rename(tmp.c_str(), (dir_ / kInfoFile).c_str()) != 0) {
    throw_system_error("rename", (dir_ / kInfoFile).string());
  }
}

std::vector<std::string> InstanceDir::remove_contents() const {
  std::vector<std::string> removed;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const std::string name = entry.path().filename().string();
    if (name == kLockFile) continue;
    std::error_code ec;
    if (fs::remove_all(entry.path(), ec) > 0) removed.push_back((dir_ / name).string());
  }
  return removed;
}

void InstanceDir::remove() {
  if (!lock_) return;
  remove_contents();
  // Unlink the lock file while still holding the lock, so a server starting right now either
  // sees our lock or creates a fresh file of its own.
  ::unlink((dir_ / kLockFile).c_str());
  ::rmdir(dir_.c_str());
  lock_.reset();
}

std::optional<InstanceInfo> find_live_instance(const fs::path& base, const std::string& instance) {
  const fs::path dir = base / instance;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(dir, ec))) return std::nullopt;
  check_private_dir(base);
  check_private_dir(dir);
  UniqueFd lock(retry_eintr(
      [&] { return ::open((dir / kLockFile).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC); }));
  if (!lock) return std::nullopt;
  if (retry_eintr([&] { return ::flock(lock.get(), LOCK_SH | LOCK_NB); }) == 0) {
    return std::nullopt;  // nobody holds it: no server is running
  }
  if (errno != EWOULDBLOCK) throw_system_error("flock", (dir / kLockFile).string());
  const fs::path p = dir / kInfoFile;
  if (!fs::exists(fs::symlink_status(p, ec))) return std::nullopt;  // still starting
  UniqueFd fd = open_private_file(p, O_RDONLY);
  std::ifstream in(p);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(p.string() + ": " + e.what());
  }
  return instance_info_from_json(j);
}

}  // namespace chat

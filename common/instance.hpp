// The runtime directory of an instance (DESIGN.md "Instances and rendezvous"): BASE/INSTANCE,
// 0700, holding the `lock` file the server flocks for its lifetime and `instance.json`.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/access.hpp"
#include "common/unique_fd.hpp"

namespace chat {

// BASE: `runtime_dir` if given, else $XDG_RUNTIME_DIR/ipchat, else /tmp/ipchat-UID.
std::filesystem::path resolve_runtime_base(const std::string& runtime_dir);

// What the server publishes in instance.json for clients and `--cleanup`.
struct InstanceInfo {
  std::string instance;
  std::string transport;
  pid_t pid = 0;
  int protocol = 0;
  nlohmann::json objects;  // backend-specific: the names of every IPC object it created
};

nlohmann::json to_json(const InstanceInfo& info);
// Throws std::runtime_error if a field is missing or has the wrong type.
InstanceInfo instance_info_from_json(const nlohmann::json& j);

// Checks that `dir` is a real directory (not a symlink) owned by us and not writable by group
// or others; throws UsageError saying which of these fails.
void check_private_dir(const std::filesystem::path& dir);

// Thrown by InstanceDir::acquire when a live server holds the lock.
class InstanceBusy : public std::runtime_error {
 public:
  InstanceBusy(const std::string& what, pid_t pid) : std::runtime_error(what), pid_(pid) {}
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

// The server's hold on BASE/INSTANCE. Not thread-safe; owned by the server's main thread.
class InstanceDir {
 public:
  // Creates BASE and BASE/INSTANCE 0700 if missing (whatever the umask), refuses ones that
  // fail check_private_dir, and takes the exclusive flock on `lock`. Throws InstanceBusy if
  // another process holds it.
  // With an `access` policy other than `user`, both levels get the search permission the
  // policy needs (never write permission for anyone but us).
  static InstanceDir acquire(const std::filesystem::path& base, const std::string& instance,
                             const AccessPolicy& access = AccessPolicy());

  InstanceDir(InstanceDir&&) = default;
  InstanceDir& operator=(InstanceDir&&) = default;
  ~InstanceDir();

  const std::filesystem::path& path() const { return dir_; }
  const std::string& instance() const { return instance_; }

  // The instance.json a previous server left behind, if any (then it died without cleanup).
  std::optional<InstanceInfo> stale_info() const;

  // Atomically (write + rename) publishes instance.json, mode 0600.
  void publish(const InstanceInfo& info) const;

  // Removes every file in the directory except `lock`; returns their names.
  std::vector<std::string> remove_contents() const;

  // Removes the lock file and the directory itself, then releases the lock. After this the
  // object is empty. Call on clean shutdown after the transport has removed its objects.
  void remove();

 private:
  InstanceDir(std::filesystem::path dir, std::string instance, UniqueFd lock)
      : dir_(std::move(dir)), instance_(std::move(instance)), lock_(std::move(lock)) {}
  std::filesystem::path dir_;
  std::string instance_;
  UniqueFd lock_;
};

// For clients: reads BASE/INSTANCE/instance.json of a live server. Returns nullopt if there is
// no such instance or its server is not running (the lock is free). Throws UsageError if the
// directory fails check_private_dir or the file is malformed.
std::optional<InstanceInfo> find_live_instance(const std::filesystem::path& base,
                                               const std::string& instance);

// Opens `path` relative to nothing with O_NOFOLLOW and checks it is a regular file owned by us.
UniqueFd open_private_file(const std::filesystem::path& path, int flags, mode_t mode = 0600);

}  // namespace chat

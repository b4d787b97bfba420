// System V shared memory (shmget/shmat, visible in `ipcs -m`) for the `signal` backend: the one
// RAII owner of an attachment, and a MemorySource of private segments whose id the grant
// carries.
#pragma once

#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transport/shm/memory.hpp"

namespace chat::transport::sig {

// One attachment (shmat) of one SysV segment, detached (shmdt) on destruction. Move-only.
// Creating and opening check that the segment is ours: owner and creator are our effective
// uid, nobody else has any permission, and the size is exactly the one asked for.
class SysvSegment {
 public:
  SysvSegment() = default;
  SysvSegment(SysvSegment&& other) noexcept;
  SysvSegment& operator=(SysvSegment&& other) noexcept;
  SysvSegment(const SysvSegment&) = delete;
  SysvSegment& operator=(const SysvSegment&) = delete;
  ~SysvSegment();

  // Creates a new zero-filled segment under `key` (IPC_PRIVATE for an anonymous one) with
  // IPC_CREAT|IPC_EXCL, mode 0600, and attaches it. A segment that already has `key` is never
  // shared: std::system_error with EEXIST. `label` names the segment in errors.
  static SysvSegment create(key_t key, std::size_t bytes, const std::string& label);
  // Attaches the existing segment `shmid` after checking it is ours and exactly `bytes` long;
  // std::system_error (EACCES, EINVAL) if it is not.
  static SysvSegment open(int shmid, std::size_t bytes, const std::string& label);
  // Marks segment `shmid` for removal (IPC_RMID): it disappears once the last process has
  // detached it. True if it was removed now, false if it did not exist any more.
  static bool remove(int shmid);

  int id() const { return id_; }
  std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  SysvSegment(int id, std::byte* data, std::size_t size) : id_(id), data_(data), size_(size) {}
  void reset() noexcept;
  int id_ = -1;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// A segment's name is its shmid in decimal and nothing else: the id, or nullopt.
std::optional<int> parse_shmid(std::string_view name);

// The IPC_STAT record of segment `shmid`; std::system_error if there is none.
shmid_ds stat_sysv_segment(int shmid);

// The channel json's key for the segment id.
inline constexpr char kChannelShmid[] = "shmid";

// Segments for the server's clients: IPC_PRIVATE, 0600, removed (IPC_RMID) as soon as the
// server has attached them; the client attaches by the id in its grant, which Linux allows
// while the server keeps its attachment.
std::unique_ptr<shm::MemorySource> make_sysv_source();

// Before the door, the control segment had the key ftok(dir/sysv.key, 'I').
inline constexpr const char* kSysvKeyFile = "sysv.key";
inline constexpr int kSysvProjectId = 'I';

// Removes what a dead server of the instance in `dir` left: the keyed control segment of a
// server from before the door, and the private client segments it created. Only segments of our uid
// whose creating process is gone (and, if `dead_server_pid` is known, was that process) are
// touched. Returns a line per segment removed.
std::vector<std::string> remove_sysv_leftovers(const std::filesystem::path& dir,
                                               pid_t dead_server_pid, int ctl_shmid,
                                               std::size_t ctl_bytes, std::size_t client_bytes);

}  // namespace chat::transport::sig

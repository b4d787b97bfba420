// SysV message queues: the owning handle, the checks that a queue is a private one of ours,
// and the record of created queues that lets a crashed server's queues be found again.
#pragma once

#include <sys/msg.h>
#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"

namespace chat::transport::msgq {

// A queue this process created; removed (IPC_RMID) on destruction. Move-only.
class OwnedQueue {
 public:
  OwnedQueue() = default;
  // msgget(key, IPC_CREAT|IPC_EXCL|0600), then checks with IPC_STAT that it is ours. EEXIST if
  // the key is taken: a collision is an error, never a shared queue. Throws std::system_error
  // naming `what`.
  static OwnedQueue create(key_t key, const std::string& what);

  OwnedQueue(OwnedQueue&& other) noexcept;
  OwnedQueue& operator=(OwnedQueue&& other) noexcept;
  OwnedQueue(const OwnedQueue&) = delete;
  OwnedQueue& operator=(const OwnedQueue&) = delete;
  ~OwnedQueue() { reset(); }

  int id() const { return id_; }
  key_t key() const { return key_; }
  time_t ctime() const { return ctime_; }
  explicit operator bool() const { return id_ >= 0; }

  // Removes the queue now; a reader blocked in msgrcv gets EIDRM.
  void reset() noexcept;

 private:
  int id_ = -1;
  key_t key_ = 0;
  time_t ctime_ = 0;
};

// IPC_STAT; false (errno set) if there is no such queue (any more).
bool stat_queue(int id, msqid_ds& ds);

// True if the queue was created by and belongs to our uid and has mode 0600.
bool is_private_queue(const msqid_ds& ds);

// An append-only list of the queues a server created, one "ID KEY CTIME" line each, written
// before a queue is handed out: client queues have random keys, so after a crash this file is
// the only way to find them. Removed on destruction (after the queues, by the owner).
class QueueRecord {
 public:
  QueueRecord() = default;
  // Creates `path` O_EXCL, 0600. Throws std::system_error.
  static QueueRecord create(std::filesystem::path path);

  QueueRecord(QueueRecord&&) noexcept = default;
  QueueRecord& operator=(QueueRecord&&) noexcept = default;
  ~QueueRecord();

  // Appends one line with a single write. Throws std::system_error: a queue that cannot be
  // recorded must not be used.
  void add(const OwnedQueue& queue);

  std::size_t lines() const { return lines_; }

  // Replaces the list by `live` (temporary file, renamed over), when removed queues dominate.
  void rewrite(const std::vector<const OwnedQueue*>& live);

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
  std::size_t lines_ = 0;
};

// Removes the queues listed in the record at `path` that still exist, are private queues of
// ours and still have the recorded key and creation time (so never a queue that merely reuses
// a recorded id). Returns one line per queue removed; nothing if there is no record.
std::vector<std::string> remove_recorded_queues(const std::filesystem::path& path);

}  // namespace chat::transport::msgq

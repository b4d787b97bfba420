// SysV message queues: the owning handle, the checks that a queue is what we take it for, and
// the record of created queues that lets a crashed server's queues be found again.
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
  // A new IPC_PRIVATE queue (no key: reached only through its id) handed to `owner`: IPC_SET
  // makes `owner` its owner with mode 0600, and the creator (us) keeps its access. Throws
  // std::system_error naming `what`.
  static OwnedQueue create_for(uid_t owner, const std::string& what);

  OwnedQueue(OwnedQueue&& other) noexcept;
  OwnedQueue& operator=(OwnedQueue&& other) noexcept;
  OwnedQueue(const OwnedQueue&) = delete;
  OwnedQueue& operator=(const OwnedQueue&) = delete;
  ~OwnedQueue() { reset(); }

  int id() const { return id_; }
  key_t key() const { return key_; }
  time_t ctime() const { return ctime_; }  // after the hand-over
  uid_t owner() const { return owner_; }
  explicit operator bool() const { return id_ >= 0; }

  // Removes the queue now; a reader blocked in msgrcv gets EIDRM.
  void reset() noexcept;

 private:
  int id_ = -1;
  key_t key_ = 0;
  time_t ctime_ = 0;
  uid_t owner_ = 0;
};

// IPC_STAT; false (errno set) if there is no such queue (any more), or we may not look at it.
bool stat_queue(int id, msqid_ds& ds);

// True if the queue was created by and belongs to our uid and has mode 0600.
bool is_private_queue(const msqid_ds& ds);

// True if the queue has no key, was created by `creator`, belongs to `owner` and has mode 0600:
// what a client checks of the queues the server gave it.
bool is_queue_handed_to(const msqid_ds& ds, uid_t owner, uid_t creator);

// What a server wrote down about one of its queues, for removing it after a crash.
struct QueueEntry {
  int id = -1;
  long long key = 0;
  long long ctime = 0;  // at the hand-over
  uid_t owner = 0;
  // Whether the queue was handed to a client's account. A client may change its own queues
  // (IPC_SET moves ctime on), so those are matched by creator, key, owner and a ctime no
  // older than recorded; the server's own private queues must be exactly as recorded.
  bool handed = true;
};

QueueEntry entry_of(const OwnedQueue& queue);

// Removes the queue `e` names if it still exists, was created by our uid and still matches the
// entry (so never a queue that merely reuses a recorded id: an IPC id carries a sequence
// number, and one created since by someone else has another creator or owner or key).
// Returns a line saying what was removed, or an empty string.
std::string remove_if_ours(const QueueEntry& e);

// An append-only list of the queues a server created, one "ID KEY CTIME OWNER" line each,
// written before a queue is handed out: IPC_PRIVATE queues have no key, so after a crash this
// file is the only way to find them. Removed on destruction (after the queues, by the owner).
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
  const std::filesystem::path& path() const { return path_; }

  // Replaces the list by `live` (temporary file, renamed over), when removed queues dominate.
  void rewrite(const std::vector<const OwnedQueue*>& live);

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
  std::size_t lines_ = 0;
};

// Removes the queues listed in the record at `path` that remove_if_ours() finds ours. Also
// reads the lines of the pre-door record ("ID KEY CTIME": private queues of ours, matched
// exactly). Returns one line per queue removed; nothing if there is no record.
std::vector<std::string> remove_recorded_queues(const std::filesystem::path& path);

}  // namespace chat::transport::msgq

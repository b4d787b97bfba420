#include "transport/msgq/sysv_queue.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/ipc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <set>
#include <sstream>
#include <utility>

#include "common/error.hpp"
#include "common/instance.hpp"
#include "common/os.hpp"

namespace chat::transport::msgq {

OwnedQueue OwnedQueue::create(key_t key, const std::string& what) {
  const int id = ::msgget(key, IPC_CREAT | IPC_EXCL | 0600);
  if (id < 0) throw_system_error("msgget", what);
  OwnedQueue q;
  q.id_ = id;
  q.key_ = key;
  q.owner_ = ::geteuid();
  msqid_ds ds{};
  if (!stat_queue(id, ds)) throw_system_error("msgctl(IPC_STAT)", what);
  if (!is_private_queue(ds)) throw_system_error("msgget", what + ": not a private queue", EPERM);
  q.ctime_ = ds.msg_ctime;
  return q;
}

OwnedQueue OwnedQueue::create_for(uid_t owner, const std::string& what) {
  OwnedQueue q = create(IPC_PRIVATE, what);
  msqid_ds ds{};
  if (!stat_queue(q.id_, ds)) throw_system_error("msgctl(IPC_STAT)", what);
  ds.msg_perm.uid = owner;
  ds.msg_perm.mode = 0600;
  if (::msgctl(q.id_, IPC_SET, &ds) != 0) throw_system_error("msgctl(IPC_SET)", what);
  if (!stat_queue(q.id_, ds)) throw_system_error("msgctl(IPC_STAT)", what);
  if (!is_queue_handed_to(ds, owner, ::geteuid())) {
    throw_system_error("msgctl(IPC_SET)", what + ": not handed over as asked", EPERM);
  }
  q.owner_ = owner;
  q.ctime_ = ds.msg_ctime;
  return q;
}

OwnedQueue::OwnedQueue(OwnedQueue&& other) noexcept
    : id_(std::exchange(other.id_, -1)),
      key_(other.key_),
      ctime_(other.ctime_),
      owner_(other.owner_) {}

OwnedQueue& OwnedQueue::operator=(OwnedQueue&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = std::exchange(other.id_, -1);
    key_ = other.key_;
    ctime_ = other.ctime_;
    owner_ = other.owner_;
  }
  return *this;
}

void OwnedQueue::reset() noexcept {
  // As the creator we may remove it whatever its owner did to it since.
  if (id_ >= 0) ::msgctl(id_, IPC_RMID, nullptr);
  id_ = -1;
}

bool stat_queue(int id, msqid_ds& ds) {
  return retry_eintr([&] { return ::msgctl(id, IPC_STAT, &ds); }) == 0;
}

bool is_private_queue(const msqid_ds& ds) {
  const uid_t me = ::geteuid();
  return ds.msg_perm.uid == me && ds.msg_perm.cuid == me && (ds.msg_perm.mode & 0777) == 0600;
}

bool is_queue_handed_to(const msqid_ds& ds, uid_t owner, uid_t creator) {
  return ds.msg_perm.__key == IPC_PRIVATE && ds.msg_perm.uid == owner &&
         ds.msg_perm.cuid == creator && (ds.msg_perm.mode & 0777) == 0600;
}

QueueEntry entry_of(const OwnedQueue& queue) {
  return {queue.id(), queue.key(), static_cast<long long>(queue.ctime()), queue.owner(), true};
}

std::string remove_if_ours(const QueueEntry& e) {
  msqid_ds ds{};
  if (e.id < 0 || !stat_queue(e.id, ds)) return {};
  if (ds.msg_perm.cuid != ::geteuid() || static_cast<long long>(ds.msg_perm.__key) != e.key ||
      ds.msg_perm.uid != e.owner) {
    return {};
  }
  const auto ctime = static_cast<long long>(ds.msg_ctime);
  if (e.handed ? ctime < e.ctime : (ctime != e.ctime || !is_private_queue(ds))) return {};
  if (::msgctl(e.id, IPC_RMID, nullptr) != 0) return {};
  char line[128];
  std::snprintf(line, sizeof line, "SysV message queue id %d (key 0x%08x, owner uid %u)", e.id,
                static_cast<unsigned>(e.key), static_cast<unsigned>(e.owner));
  return line;
}

namespace {

std::string line_of(const OwnedQueue& q) {
  return std::to_string(q.id()) + " " + std::to_string(q.key()) + " " +
         std::to_string(static_cast<long long>(q.ctime())) + " " + std::to_string(q.owner()) + "\n";
}

}  // namespace

QueueRecord QueueRecord::create(std::filesystem::path path) {
  QueueRecord r;
  r.fd_ = create_private_file(path, O_WRONLY | O_APPEND);
  r.path_ = std::move(path);
  return r;
}

QueueRecord::~QueueRecord() {
  if (fd_) ::unlink(path_.c_str());
}

void QueueRecord::add(const OwnedQueue& queue) {
  // O_APPEND and one short write: a crash leaves whole lines only.
  write_all(fd_.get(), line_of(queue), path_.string());
  ++lines_;
}

void QueueRecord::rewrite(const std::vector<const OwnedQueue*>& live) {
  std::string text;
  for (const OwnedQueue* q : live) text += line_of(*q);
  std::filesystem::path tmp = path_;
  tmp += ".tmp";
  ::unlink(tmp.c_str());  // a leftover of a rewrite that failed half-way
  UniqueFd fd = create_private_file(tmp, O_WRONLY | O_APPEND);
  write_all(fd.get(), text, tmp.string());
  if (::rename(tmp.c_str(), path_.c_str()) != 0) throw_system_error("rename", path_.string());
  fd_ = std::move(fd);
  lines_ = live.size();
}

std::vector<std::string> remove_recorded_queues(const std::filesystem::path& path) {
  std::vector<std::string> removed;
  std::string text;
  try {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return removed;
    UniqueFd fd = open_private_file(path, O_RDONLY);
    char buf[4096];
    for (;;) {
      const ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
  } catch (const std::exception&) {
    return removed;  // not a record of ours: nothing in it can be trusted
  }
  std::istringstream in(text);
  std::set<int> seen;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    QueueEntry e;
    long long owner = -1;
    if (!(fields >> e.id >> e.key >> e.ctime)) continue;
    if (fields >> owner && owner >= 0) {
      e.owner = static_cast<uid_t>(owner);
    } else {
      e.owner = ::geteuid();  // the pre-door record: every queue was a private one of ours
      e.handed = false;
    }
    if (!seen.insert(e.id).second) continue;
    if (std::string r = remove_if_ours(e); !r.empty()) removed.push_back(std::move(r));
  }
  return removed;
}

}  // namespace chat::transport::msgq

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

namespace chat::transport::msgq {

OwnedQueue OwnedQueue::create(key_t key, const std::string& what) {
  const int id = ::msgget(key, IPC_CREAT | IPC_EXCL | 0600);
  if (id < 0) throw_system_error("msgget", what);
  OwnedQueue q;
  q.id_ = id;
  q.key_ = key;
  msqid_ds ds{};
  if (!stat_queue(id, ds)) throw_system_error("msgctl(IPC_STAT)", what);
  if (!is_private_queue(ds)) throw_system_error("msgget", what + ": not a private queue", EPERM);
  q.ctime_ = ds.msg_ctime;
  return q;
}

OwnedQueue::OwnedQueue(OwnedQueue&& other) noexcept
    : id_(std::exchange(other.id_, -1)), key_(other.key_), ctime_(other.ctime_) {}

OwnedQueue& OwnedQueue::operator=(OwnedQueue&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = std::exchange(other.id_, -1);
    key_ = other.key_;
    ctime_ = other.ctime_;
  }
  return *this;
}

void OwnedQueue::reset() noexcept {
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

namespace {

std::string line_of(const OwnedQueue& q) {
  return std::to_string(q.id()) + " " + std::to_string(q.key()) + " " +
         std::to_string(static_cast<long long>(q.ctime())) + "\n";
}

void write_all(int fd, const std::string& text, const std::filesystem::path& path) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n =
        retry_eintr([&] { return ::write(fd, text.data() + done, text.size() - done); });
    if (n < 0) throw_system_error("write", path.string());
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

QueueRecord QueueRecord::create(std::filesystem::path path) {
  QueueRecord r;
  r.fd_ = open_private_file(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND);
  r.path_ = std::move(path);
  if (::fchmod(r.fd_.get(), 0600) != 0) throw_system_error("fchmod", r.path_.string());
  return r;
}

QueueRecord::~QueueRecord() {
  if (fd_) ::unlink(path_.c_str());
}

void QueueRecord::add(const OwnedQueue& queue) {
  // O_APPEND and one short write: a crash leaves whole lines only.
  write_all(fd_.get(), line_of(queue), path_);
  ++lines_;
}

void QueueRecord::rewrite(const std::vector<const OwnedQueue*>& live) {
  std::string text;
  for (const OwnedQueue* q : live) text += line_of(*q);
  std::filesystem::path tmp = path_;
  tmp += ".tmp";
  UniqueFd fd = open_private_file(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND);
  if (::fchmod(fd.get(), 0600) != 0) throw_system_error("fchmod", tmp.string());
  write_all(fd.get(), text, tmp);
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
  int id = 0;
  long long key = 0, ctime = 0;
  while (in >> id >> key >> ctime) {
    if (!seen.insert(id).second) continue;
    msqid_ds ds{};
    if (!stat_queue(id, ds) || !is_private_queue(ds)) continue;
    if (static_cast<long long>(ds.msg_perm.__key) != key ||
        static_cast<long long>(ds.msg_ctime) != ctime) {
      continue;  // the id was reused by a queue that is not the one recorded
    }
    if (::msgctl(id, IPC_RMID, nullptr) == 0) {
      char line[96];
      std::snprintf(line, sizeof line, "SysV message queue id %d (key 0x%08x)", id,
                    static_cast<unsigned>(key));
      removed.emplace_back(line);
    }
  }
  return removed;
}

}  // namespace chat::transport::msgq

#include "transport/signal/sysv_shm.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>

#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace chat::transport::sig {
namespace {

std::string hex_key(key_t key) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", static_cast<unsigned>(key));
  return buf;
}

// Ours: owned and created by our effective uid, no permission for group or others.
bool is_private(const shmid_ds& ds) {
  const uid_t me = ::geteuid();
  return ds.shm_perm.uid == me && ds.shm_perm.cuid == me && (ds.shm_perm.mode & 077) == 0;
}

void check_ours(const shmid_ds& ds, std::size_t bytes, const std::string& label) {
  if (!is_private(ds)) {
    throw_system_error("shmctl(IPC_STAT)", label + " is not a private segment of ours", EACCES);
  }
  if (ds.shm_segsz != bytes) {
    throw_system_error("shmctl(IPC_STAT)",
                       label + " has " + std::to_string(ds.shm_segsz) + " bytes, expected " +
                           std::to_string(bytes),
                       EINVAL);
  }
}

std::byte* attach(int id, const std::string& label) {
  void* p = ::shmat(id, nullptr, 0);
  if (p == reinterpret_cast<void*>(-1)) throw_system_error("shmat", label);
  return static_cast<std::byte*>(p);
}

}  // namespace

SysvSegment::SysvSegment(SysvSegment&& other) noexcept
    : id_(std::exchange(other.id_, -1)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

SysvSegment& SysvSegment::operator=(SysvSegment&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = std::exchange(other.id_, -1);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

SysvSegment::~SysvSegment() {
  reset();
}

void SysvSegment::reset() noexcept {
  // shmdt only fails for an address that is not attached, which a SysvSegment never holds.
  if (data_ != nullptr) ::shmdt(data_);
  id_ = -1;
  data_ = nullptr;
  size_ = 0;
}

SysvSegment SysvSegment::create(key_t key, std::size_t bytes, const std::string& label) {
  const int id = ::shmget(key, bytes, IPC_CREAT | IPC_EXCL | 0600);
  if (id < 0) {
    const int err = errno;
    std::string what = label;
    if (key != IPC_PRIVATE) {
      what += " (key " + hex_key(key) + ")";
      if (err == EEXIST) what += ": another segment has this key and is never shared";
    }
    throw_system_error("shmget(IPC_CREAT|IPC_EXCL)", what, err);
  }
  // We created it, so it is ours to remove if anything below fails.
  try {
    check_ours(stat_sysv_segment(id), bytes, label);
    return SysvSegment(id, attach(id, label), bytes);
  } catch (...) {
    remove(id);
    throw;
  }
}

SysvSegment SysvSegment::open(int shmid, std::size_t bytes, const std::string& label) {
  check_ours(stat_sysv_segment(shmid), bytes, label);
  SysvSegment s(shmid, attach(shmid, label), bytes);
  // Checked again while attached: an attached segment cannot be freed, so this is the record
  // of the very memory we map, not of one that took the id in between.
  check_ours(stat_sysv_segment(shmid), bytes, label);
  return s;
}

bool SysvSegment::remove(int shmid) {
  return ::shmctl(shmid, IPC_RMID, nullptr) == 0;
}

std::optional<int> parse_shmid(std::string_view name) {
  int id = -1;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), id);
  if (ec != std::errc() || end != name.data() + name.size() || id < 0) return std::nullopt;
  return id;
}

shmid_ds stat_sysv_segment(int shmid) {
  shmid_ds ds{};
  if (::shmctl(shmid, IPC_STAT, &ds) != 0) {
    throw_system_error("shmctl(IPC_STAT)", "SysV segment " + std::to_string(shmid));
  }
  return ds;
}

namespace {

class SysvShmSegment final : public shm::Segment {
 public:
  explicit SysvShmSegment(SysvSegment segment) : segment_(std::move(segment)) {}
  std::byte* data() override { return segment_.data(); }
  std::size_t size() const override { return segment_.size(); }
  int fd() const override { return -1; }
  nlohmann::json channel() const override { return {{kChannelShmid, segment_.id()}}; }
  void granted() override {}

 private:
  SysvSegment segment_;
};

class SysvSource final : public shm::MemorySource {
 public:
  std::unique_ptr<shm::Segment> create(std::string_view what, std::size_t bytes) override {
    auto segment = SysvSegment::create(IPC_PRIVATE, bytes, "SysV segment " + std::string(what));
    // Removed at once: Linux still lets a process attach a removed segment by its id while
    // anyone has it attached (we do until the client is gone), and nothing is left behind
    // however the server ends.
    SysvSegment::remove(segment.id());
    return std::make_unique<SysvShmSegment>(std::move(segment));
  }

  std::unique_ptr<shm::Segment> attach(const nlohmann::json& channel, UniqueFd, std::size_t bytes,
                                       uid_t owner) override {
    if (owner != ::geteuid()) {
      throw std::runtime_error("the server runs as uid " + std::to_string(owner) +
                               "; SysV segments and signals work only within one account");
    }
    const auto& id = channel.at(kChannelShmid);
    if (!id.is_number_integer() || id.get<long long>() < 0 ||
        id.get<long long>() > std::numeric_limits<int>::max()) {
      throw std::runtime_error("the channel's shmid is not a segment id");
    }
    const int shmid = id.get<int>();
    return std::make_unique<SysvShmSegment>(
        SysvSegment::open(shmid, bytes, "SysV segment " + std::to_string(shmid)));
  }

  bool passes_fd() const override { return false; }

  // Segments are private and removed at once; only one created in the instant before its
  // removal could outlive a killed server, and cleanup finds those by their creator's pid.
  nlohmann::json objects() const override { return {{"sysv_shm", "IPC_PRIVATE, by creator pid"}}; }
};

// A process that no longer runs: no such pid, or a zombie waiting to be reaped.
bool process_gone(pid_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return true;  // exited between the two looks
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  const char state = stat[paren + 2];
  return state == 'Z' || state == 'X';
}

// Rows of /proc/sysvipc/shm as column name -> value, so the column order does not matter.
std::vector<std::map<std::string, long long>> sysv_shm_table() {
  std::vector<std::map<std::string, long long>> rows;
  std::ifstream in("/proc/sysvipc/shm");
  std::string line;
  if (!std::getline(in, line)) return rows;
  std::vector<std::string> columns;
  std::istringstream header(line);
  for (std::string c; header >> c;) columns.push_back(c);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::map<std::string, long long> row;
    long long v = 0;
    for (std::size_t i = 0; i < columns.size() && fields >> v; ++i) row[columns[i]] = v;
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

std::unique_ptr<shm::MemorySource> make_sysv_source() {
  return std::make_unique<SysvSource>();
}

std::vector<std::string> remove_sysv_leftovers(const std::filesystem::path& dir,
                                               pid_t dead_server_pid, int ctl_shmid,
                                               std::size_t ctl_bytes, std::size_t client_bytes) {
  std::vector<std::string> removed;
  std::set<int> seen;
  // A segment is a dead server's if it is ours, not already removed, of the size the server
  // creates, and its creator no longer runs (PID reuse: then it was not created by a live
  // process, whoever holds that pid now) and was the dead server when that is known.
  // Clients that are still attached keep their mapping; the memory goes once they detach.
  const auto reclaim = [&](int id, std::size_t bytes, bool keyed, const std::string& what) {
    if (id < 0 || !seen.insert(id).second) return;
    shmid_ds ds{};
    if (::shmctl(id, IPC_STAT, &ds) != 0) return;
    if (!is_private(ds) || (ds.shm_perm.mode & SHM_DEST) != 0 || ds.shm_segsz != bytes) return;
    if (keyed == (ds.shm_perm.__key == IPC_PRIVATE)) return;
    if (dead_server_pid > 0 && ds.shm_cpid != dead_server_pid) return;
    if (!process_gone(ds.shm_cpid)) return;
    if (SysvSegment::remove(id)) {
      removed.push_back("SysV shm segment " + std::to_string(id) + " (" + what +
                        ", created by pid " + std::to_string(ds.shm_cpid) + ")");
    }
  };

  // The control segment of a server from before the door: by the key of its key file, if that
  // is still there and ours...
  const auto key_path = dir / kSysvKeyFile;
  struct stat st {};
  if (::lstat(key_path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid()) {
    const key_t key = ::ftok(key_path.c_str(), kSysvProjectId);
    const int id = key == -1 ? -1 : ::shmget(key, 0, 0);
    if (id >= 0) reclaim(id, ctl_bytes, true, "control segment, key " + hex_key(key));
  }
  // ...or by the id the dead server published.
  reclaim(ctl_shmid, ctl_bytes, true, "control segment");

  // Client segments are IPC_PRIVATE: only their creator's pid tells whose they are.
  if (dead_server_pid > 0) {
    for (const auto& row : sysv_shm_table()) {
      const auto get = [&](const char* c) {
        const auto it = row.find(c);
        return it == row.end() ? -1LL : it->second;
      };
      if (get("key") != IPC_PRIVATE || get("cpid") != dead_server_pid) continue;
      if (get("uid") != static_cast<long long>(::geteuid())) continue;
      reclaim(static_cast<int>(get("shmid")), client_bytes, false, "client segment");
    }
  }
  return removed;
}

}  // namespace chat::transport::sig

#include "transport/fifo/channel.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <utility>

#include "common/error.hpp"
#include "common/os.hpp"

namespace chat::transport::fifo {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kPrefix = "fifo-";
constexpr std::string_view kUpSuffix = ".up";
constexpr std::string_view kDownSuffix = ".down";

// A FIFO node this process made, for the moment it takes to open it: unlinked on destruction.
class Node {
 public:
  // mkfifo fails with EEXIST if anything is at `path`, a symlink included, so the node is ours.
  explicit Node(fs::path path) : path_(std::move(path)) {
    if (::mkfifo(path_.c_str(), 0600) != 0) throw_system_error("mkfifo", path_.string());
    // mkfifo applied the umask, which may have taken bits we need to open it; set them exactly.
    // The dir is writable by its owner alone: nothing can have replaced the node meanwhile, and
    // the fstat in open() checks it anyway.
    struct stat st {};
    if (::fchmodat(AT_FDCWD, path_.c_str(), 0600, AT_SYMLINK_NOFOLLOW) != 0 ||
        ::lstat(path_.c_str(), &st) != 0) {
      const int err = errno;
      ::unlink(path_.c_str());
      throw_system_error("chmod", path_.string(), err);
    }
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  ~Node() { ::unlink(path_.c_str()); }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Opens the node without blocking: a reading end always; a writing end once a reader exists.
  UniqueFd open(int access) const {
    UniqueFd fd(retry_eintr(
        [&] { return ::open(path_.c_str(), access | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC); }));
    if (!fd) throw_system_error("open", path_.string());
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_system_error("fstat", path_.string());
    if (st.st_dev != dev_ || st.st_ino != ino_ || !S_ISFIFO(st.st_mode)) {
      throw_system_error("open", path_.string() + " (not the FIFO just made)", EPERM);
    }
    return fd;
  }

 private:
  fs::path path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Limits the pipe behind `fd` to `bytes` (F_SETPIPE_SZ). Failing is harmless: a pipe is never
// larger than the default 64 KiB unless asked, so the buffer bound holds either way.
void limit_pipe(int fd, int bytes) {
  ::fcntl(fd, F_SETPIPE_SZ, bytes);
}

}  // namespace

Channel make_channel(const fs::path& dir, int pipe_bytes) {
  char stem[32];
  std::snprintf(stem, sizeof stem, "%.*s%016llx", static_cast<int>(kPrefix.size()), kPrefix.data(),
                static_cast<unsigned long long>(chat::random_nonce("fifo channel name")));
  const Node up(dir / (std::string(stem) + std::string(kUpSuffix)));
  const Node down(dir / (std::string(stem) + std::string(kDownSuffix)));
  // Reading ends first: opening one never waits for a writer, and with a reader there, opening
  // the writing end does not fail with ENXIO.
  Channel ch;
  ch.up_read = up.open(O_RDONLY);
  ch.up_write = up.open(O_WRONLY);
  ch.down_read = down.open(O_RDONLY);
  ch.down_write = down.open(O_WRONLY);
  limit_pipe(ch.up_read.get(), pipe_bytes);
  limit_pipe(ch.down_write.get(), pipe_bytes);
  return ch;  // the Nodes unlink both names now
}

bool is_leftover_name(std::string_view name) {
  // Ours ("fifo-<nonce>.up"), and the legacy handshake's: "hello.fifo", "<pid>-<nonce>.up", and
  // ".<pid>-<nonce>.up.tmp" while one was being made.
  return name == "hello.fifo" || ends_with(name, kUpSuffix) || ends_with(name, kDownSuffix) ||
         ends_with(name, ".up.tmp") || ends_with(name, ".down.tmp");
}

}  // namespace chat::transport::fifo

// FIFO nodes in the runtime dir: creating them 0600 whatever the umask, owning their names, and
// opening them without following symlinks, blocking, or trusting what is found there.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

#include "common/unique_fd.hpp"

namespace chat::transport::fifo {

// Owns a FIFO node this process created: unlinks it on destruction, unless the name now refers
// to something else. Move-only.
class OwnedFifo {
 public:
  OwnedFifo() = default;
  // mkfifo(`path`) with mode 0600 whatever the umask (set without following a symlink); fails
  // with EEXIST if anything is there, a symlink included. Throws std::system_error.
  static OwnedFifo create(std::filesystem::path path);

  OwnedFifo(OwnedFifo&& other) noexcept;
  OwnedFifo& operator=(OwnedFifo&& other) noexcept;
  OwnedFifo(const OwnedFifo&) = delete;
  OwnedFifo& operator=(const OwnedFifo&) = delete;
  ~OwnedFifo() { reset(); }

  const std::filesystem::path& path() const { return path_; }
  explicit operator bool() const { return !path_.empty(); }

  // Renames the node to `to` unless something exists there (renameat2 RENAME_NOREPLACE), so a
  // reader never sees a half-made FIFO under the final name. Throws std::system_error.
  void rename_to(std::filesystem::path to);

  // Unlinks the node if its name still refers to it.
  void reset() noexcept;

 private:
  std::filesystem::path path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

// Opens the FIFO at `path` with `access` (O_RDONLY, O_WRONLY) plus O_NONBLOCK|O_NOFOLLOW|
// O_CLOEXEC, and checks with fstat that it is a FIFO owned by us with mode 0600. On failure
// returns an empty fd, sets `err` to the errno (ENOENT; ELOOP: a symlink; ENXIO: opened for
// writing with no reader; EPERM: not a private FIFO of ours) and `why` to a message naming the
// path.
UniqueFd open_fifo(const std::filesystem::path& path, int access, int& err, std::string& why);

// Limits the pipe behind `fd` to `bytes` (F_SETPIPE_SZ). Failing is harmless: a pipe is never
// larger than the default 64 KiB unless asked, so the buffer bound holds either way.
void limit_pipe(int fd, int bytes);

}  // namespace chat::transport::fifo

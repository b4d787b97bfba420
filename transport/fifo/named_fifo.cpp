#include "transport/fifo/named_fifo.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "common/error.hpp"

namespace chat::transport::fifo {

OwnedFifo OwnedFifo::create(std::filesystem::path path) {
  if (::mkfifo(path.c_str(), 0600) != 0) throw_system_error("mkfifo", path.string());
  // mkfifo applied the umask, which may have taken bits we need; set them exactly. With
  // AT_SYMLINK_NOFOLLOW a symlink swapped in meanwhile fails instead of being followed.
  struct stat st {};
  if (::fchmodat(AT_FDCWD, path.c_str(), 0600, AT_SYMLINK_NOFOLLOW) != 0 ||
      ::lstat(path.c_str(), &st) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    throw_system_error("chmod", path.string(), err);
  }
  OwnedFifo f;
  f.path_ = std::move(path);
  f.dev_ = st.st_dev;
  f.ino_ = st.st_ino;
  return f;
}

OwnedFifo::OwnedFifo(OwnedFifo&& other) noexcept
    : path_(std::exchange(other.path_, {})), dev_(other.dev_), ino_(other.ino_) {}

OwnedFifo& OwnedFifo::operator=(OwnedFifo&& other) noexcept {
  if (this != &other) {
    reset();
    path_ = std::exchange(other.path_, {});
    dev_ = other.dev_;
    ino_ = other.ino_;
  }
  return *this;
}

void OwnedFifo::rename_to(std::filesystem::path to) {
  if (::renameat2(AT_FDCWD, path_.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0) {
    throw_system_error("rename", to.string());
  }
  path_ = std::move(to);
}

void OwnedFifo::reset() noexcept {
  if (path_.empty()) return;
  // Only our own node: the runtime dir is private, but a name is not a handle.
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    ::unlink(path_.c_str());
  }
  path_.clear();
}

UniqueFd open_fifo(const std::filesystem::path& path, int access, int& err, std::string& why) {
  UniqueFd fd(retry_eintr(
      [&] { return ::open(path.c_str(), access | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC); }));
  if (!fd) {
    err = errno;
    if (err == ELOOP) {
      why = path.string() + " is a symbolic link; refusing to follow it";
    } else if (err == ENXIO) {
      why = "nobody is reading " + path.string() + " (ENXIO)";
    } else {
      why = "open " + path.string() + ": " + std::strerror(err);
    }
    return fd;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    err = errno;
    why = "fstat " + path.string() + ": " + std::strerror(err);
    return UniqueFd();
  }
  if (!S_ISFIFO(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 07777) != 0600) {
    err = EPERM;
    why = path.string() + " is not a FIFO of ours with mode 0600; refusing to use it";
    return UniqueFd();
  }
  return fd;
}

void limit_pipe(int fd, int bytes) {
  ::fcntl(fd, F_SETPIPE_SZ, bytes);
}

}  // namespace chat::transport::fifo

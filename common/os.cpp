#include "common/os.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "common/error.hpp"

namespace chat {

void write_all(int fd, std::string_view bytes, std::string_view what) {
  while (!bytes.empty()) {
    const ssize_t n = retry_eintr([&] { return ::write(fd, bytes.data(), bytes.size()); });
    if (n < 0) throw_system_error("write", what);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

UniqueFd create_private_file(const std::filesystem::path& path, int flags, mode_t mode) {
  UniqueFd fd(retry_eintr([&] {
    return ::open(path.c_str(), flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  }));
  if (!fd) throw_system_error("open", path.string());
  set_mode(fd.get(), mode, path.string());
  return fd;
}

void set_mode(int fd, mode_t mode, std::string_view what) {
  if (::fchmod(fd, mode) != 0) throw_system_error("fchmod", what);
}

UnixAddress unix_address(const std::filesystem::path& path) {
  UnixAddress a;
  const std::string& s = path.native();
  if (s.size() >= sizeof a.addr.sun_path) throw_system_error("bind/connect", s, ENAMETOOLONG);
  a.addr.sun_family = AF_UNIX;
  std::memcpy(a.addr.sun_path, s.c_str(), s.size() + 1);
  a.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + s.size() + 1);
  return a;
}

std::uint64_t random_nonce(std::string_view what) {
  std::uint64_t v = 0;
  while (v == 0) {
    if (retry_eintr([&] { return ::getrandom(&v, sizeof v, 0); }) != sizeof v) {
      throw_system_error("getrandom", what);
    }
  }
  return v;
}

}  // namespace chat

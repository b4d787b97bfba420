// Small operating-system chores every module needs, each written once: writing a whole buffer,
// creating a file only we can read, a Unix socket address, a random number from the kernel.
// Failures throw std::system_error naming the call and the object (common/error.hpp).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <cstdint>
#include <filesystem>
#include <string_view>

#include "common/unique_fd.hpp"

namespace chat {

// Writes all of `bytes` to `fd`, retrying short writes and EINTR. Throws std::system_error
// naming `what` (EAGAIN on a non-blocking descriptor included: callers that can wait poll first).
void write_all(int fd, std::string_view bytes, std::string_view what);

// Creates `path` with O_EXCL|O_NOFOLLOW (an existing file or planted symlink is an error) and
// sets `mode` exactly, whatever the umask. `flags` adds to O_CREAT|O_EXCL|O_CLOEXEC.
UniqueFd create_private_file(const std::filesystem::path& path, int flags, mode_t mode = 0600);

// Sets `fd`'s mode to exactly `mode` (the umask may have taken bits a creator asked for).
void set_mode(int fd, mode_t mode, std::string_view what);

// The address of the Unix socket at `path`; std::system_error (ENAMETOOLONG) if it does not fit
// in sun_path. `length` is what bind()/connect() take.
struct UnixAddress {
  sockaddr_un addr{};
  socklen_t length = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&addr); }
};
UnixAddress unix_address(const std::filesystem::path& path);

// A random nonzero number from the kernel, for secrets and names only one process may guess.
// Throws std::system_error naming `what` if the kernel has none to give.
std::uint64_t random_nonce(std::string_view what);

}  // namespace chat

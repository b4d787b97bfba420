// Error helpers shared by every module: one way to report a failed system call, one place
// that retries EINTR.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <system_error>

namespace chat {

// Throws std::system_error carrying `err` (default: errno) and a message naming the call and
// the object it was applied to, e.g. "shm_open /ipchat.x.ctl: File exists".
[[noreturn]] void throw_system_error(std::string_view call, std::string_view object,
                                     int err = errno);

// Runs `f` (a system call returning -1 with errno on failure) until it does not fail with EINTR.
template <typename F>
auto retry_eintr(F&& f) {
  for (;;) {
    auto r = f();
    if (!(r == -1 && errno == EINTR)) return r;
  }
}

// A usage or configuration error: chatd and chat exit with code 2 and print what().
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace chat

#include "common/event_fd.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "common/error.hpp"

namespace chat {

UniqueFd make_eventfd(std::string_view owner) {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) throw_system_error("eventfd", owner);
  return fd;
}

void signal_eventfd(int fd) {
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}

void drain_eventfd(int fd) {
  std::uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(fd, &count, sizeof count);
}

}  // namespace chat

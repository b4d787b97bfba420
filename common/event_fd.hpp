// eventfd(2) as a doorbell between threads: one side rings it, the other polls it for POLLIN.
#pragma once

#include <string_view>

#include "common/unique_fd.hpp"

namespace chat {

// A new eventfd, non-blocking and close-on-exec. Throws std::system_error naming `owner`.
UniqueFd make_eventfd(std::string_view owner);

// Rings: makes `fd` readable until the next drain_eventfd(). Never blocks (the count cannot
// overflow from ones); errors are not actionable and ignored.
void signal_eventfd(int fd);

// Takes every ring so far: `fd` stops being readable. Never blocks on a descriptor from
// make_eventfd(); nothing rung is not an error.
void drain_eventfd(int fd);

}  // namespace chat

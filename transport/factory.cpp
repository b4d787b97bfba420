#include "transport/factory.hpp"

#include <signal.h>

#include "transport/cond/cond.hpp"
#include "transport/uds/uds.hpp"

namespace chat::transport {
namespace {

constexpr Backend kBackends[] = {
    {"cond", "POSIX shared memory rings, process-shared robust mutex + condition variable",
     cond::listen, cond::connect, cond::cleanup},
    {"uds", "AF_UNIX SOCK_SEQPACKET sockets (the baseline)", uds::listen, uds::connect,
     uds::cleanup},
};

}  // namespace

std::span<const Backend> backends() { return kBackends; }

const Backend* find_backend(std::string_view name) {
  for (const auto& b : kBackends) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

std::string backend_names() {
  std::string out;
  for (const auto& b : kBackends) {
    if (!out.empty()) out += ", ";
    out += b.name;
  }
  return out;
}

void prepare_process() {
  // A peer that vanished must show up as EPIPE from write(), never as a SIGPIPE death.
  ::signal(SIGPIPE, SIG_IGN);
}

}  // namespace chat::transport

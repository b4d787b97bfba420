#include "transport/factory.hpp"

#include <signal.h>

#include "transport/cond/cond.hpp"
#include "transport/fifo/fifo.hpp"
#include "transport/mmap/mmap.hpp"
#include "transport/msgq/msgq.hpp"
#include "transport/shm/engine.hpp"
#include "transport/signal/signal.hpp"
#include "transport/uds/uds.hpp"

namespace chat::transport {
namespace {

constexpr Backend kBackends[] = {
    {"cond", "POSIX shared memory rings, process-shared robust mutex + condition variable",
     cond::listen, cond::connect, cond::cleanup, cond::flavor},
    {"signal", "SysV shared memory rings, real-time signal doorbell waited for with sigtimedwait",
     sig::listen, sig::connect, sig::cleanup, sig::flavor},
    {"fifo",
     "named pipes: one FIFO pair per client, made and opened by the server, passed through the "
     "door and unlinked at once",
     fifo::listen, fifo::connect, fifo::cleanup},
    {"msgq",
     "System V message queues: two keyless queues per client, handed to its account; eventfd bell",
     msgq::listen, msgq::connect, msgq::cleanup},
    {"mmap", "rings in MAP_SHARED files in the runtime dir, process-shared POSIX semaphores",
     mmap::listen, mmap::connect, mmap::cleanup, mmap::flavor},
    {"uds", "AF_UNIX SOCK_SEQPACKET sockets (the baseline)", uds::listen, uds::connect,
     uds::cleanup},
};

}  // namespace

std::span<const Backend> backends() {
  return kBackends;
}

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

ConnectOptions arrive(const std::filesystem::path& dir, const std::string& instance,
                      Deadline deadline) {
  ConnectOptions co;
  co.dir = dir;
  co.instance = instance;
  co.deadline = deadline;
  co.pass = door::enter(dir, deadline);
  return co;
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  const Backend* backend = find_backend(options.pass.transport);
  if (backend == nullptr) {
    throw ConnectError(ConnectError::Kind::kOther, "the server uses transport '" +
                                                       options.pass.transport +
                                                       "', which this client does not know");
  }
  return backend->connect(std::move(options));
}

void prepare_process() {
  // A peer that vanished must show up as EPIPE from write(), never as a SIGPIPE death.
  ::signal(SIGPIPE, SIG_IGN);
  // The `signal` backend's doorbells are only ever taken with sigtimedwait, by the thread they
  // are sent to; blocked here, before any thread exists, they are blocked in every thread.
  sig::block_doorbell_signals();
}

}  // namespace chat::transport

// `cond`: shared memory rings (a sealed memfd per client, passed through the door); a client's
// sleeping thread waits on a process-shared condition variable (CLOCK_MONOTONIC) under a
// robust mutex in its own segment. The server sleeps on the server bell.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "transport/shm/engine.hpp"
#include "transport/shm/robust_mutex.hpp"
#include "transport/shm/wake.hpp"
#include "transport/transport.hpp"

namespace chat::transport::cond {

// What a WakeArea holds for this backend. Exposed for the tests that hold a client's lock from
// a separate process, or die holding it.
struct CondWake {
  shm::RobustMutex mutex;
  shm::SharedCondvar cond;
};
inline CondWake& cond_wake(shm::WakeArea& area) {
  return *reinterpret_cast<CondWake*>(area.impl);
}

// This backend's memory source and wakers (for tests that play a hostile client).
shm::Flavor flavor(const std::filesystem::path& dir);

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options);
std::unique_ptr<ClientConnection> connect(ConnectOptions options);
std::vector<std::string> cleanup(const CleanupOptions& options);

}  // namespace chat::transport::cond

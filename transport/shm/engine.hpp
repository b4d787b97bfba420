// The server endpoint and client connection shared by every shared-memory backend. A backend
// is a Flavor: where its memory comes from and how a sleeper is woken.
#pragma once

#include <memory>

#include "transport/shm/memory.hpp"
#include "transport/shm/wake.hpp"
#include "transport/transport.hpp"

namespace chat::transport::shm {

struct Flavor {
  std::unique_ptr<MemorySource> memory;
  // Wakes clients (and is the server's too, unless server_waker is set).
  std::unique_ptr<Waker> waker;
  // Wakes the server, if it must differ: the server may never block on anything a client can
  // hold (a mutex in shared memory, say), or one stopped client would stall every other.
  std::unique_ptr<Waker> server_waker = nullptr;
};

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options, Flavor flavor);
std::unique_ptr<ClientConnection> connect(const ConnectOptions& options, Flavor flavor);

}  // namespace chat::transport::shm

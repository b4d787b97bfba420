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

struct CtlBlock;
struct ClientBlock;

// The waker that wakes the server in `flavor`.
Waker& server_waker(Flavor& flavor);

// A client's mappings after the handshake: the server's control segment and the client's own
// segment. The engine's ClientConnection is built on it; tests that play a hostile client use
// it directly to write whatever they like into the memory the server reads.
class Attachment {
 public:
  // Claims a hello entry, asks, and maps the granted segment. Throws ConnectError.
  static Attachment attach(const ConnectOptions& options, Flavor& flavor);

  CtlBlock& ctl() { return *ctl_; }
  ClientBlock& block() { return *block_; }
  // Rings the server's doorbell, as after writing to the up ring.
  void ring_server();

 private:
  Attachment() = default;
  std::unique_ptr<Segment> ctl_segment_;
  std::unique_ptr<Segment> segment_;
  CtlBlock* ctl_ = nullptr;
  ClientBlock* block_ = nullptr;
  Waker* server_waker_ = nullptr;
  pid_t server_pid_ = 0;
};

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options, Flavor flavor);
std::unique_ptr<ClientConnection> connect(const ConnectOptions& options, Flavor flavor);

}  // namespace chat::transport::shm

// The server endpoint and client connection shared by every shared-memory backend. A backend
// is a Flavor: where its memory comes from and how the server wakes a client's thread.
//
// A client enters through the door (transport/door.hpp); the server creates its segment and
// grants it with the server bell: [segment fd,] bell page fd, the client's bell eventfd, and a
// channel json. The server's I/O thread sleeps in epoll on the door, every client's bell
// eventfd, pidfd and door connection, and its own wake eventfd: nothing one client writes can
// keep it asleep for another.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "transport/bell.hpp"
#include "transport/shm/memory.hpp"
#include "transport/shm/wake.hpp"
#include "transport/transport.hpp"

namespace chat::transport::shm {

struct Flavor {
  std::unique_ptr<MemorySource> memory;
  // Wakes a client's sleeping thread (the server sleeps on the bell).
  std::unique_ptr<Waker> waker;
};

struct ClientBlock;

// What the grant's channel json says, and how many descriptors come with it.
inline constexpr char kChannelLayout[] = "layout";
inline constexpr char kChannelBytes[] = "bytes";

// A client's side of its channel: its segment and its bell. The engine's ClientConnection is
// built on it; tests that play a hostile client use it directly to write whatever they like
// into the memory the server reads.
class Attachment {
 public:
  // Maps what the server granted at the door (`options.pass`: its channel json and
  // descriptors, which are taken). Throws ConnectError (kOther) on anything unexpected.
  static Attachment attach(ConnectOptions& options, Flavor& flavor);

  ClientBlock& block() { return *block_; }
  // Rings the server's bell if it sleeps, as after writing to the up ring.
  void ring_server() { bell_->ring(); }
  // Rings it whatever its flag says.
  void ring_server_always() { bell_->ring_always(); }

 private:
  Attachment() = default;
  std::unique_ptr<Segment> segment_;
  ClientBlock* block_ = nullptr;
  std::optional<ClientBell> bell_;
};

// `transport` is the backend's name, for the grant.
std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options, std::string transport,
                                       Flavor flavor);
std::unique_ptr<ClientConnection> connect(ConnectOptions& options, Flavor flavor);

// Tests only: called by a server send() that found a client's down ring full, after the send
// announced that it waits for room and before it returns kFull. Empty: nothing is called.
// Set it while no send() runs.
void set_full_hook_for_tests(std::function<void()> hook);

}  // namespace chat::transport::shm

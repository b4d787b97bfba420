// The Transport contract: how chatd and chat move frames between processes, whatever the IPC
// mechanism underneath. Nothing here knows about rooms or nicks; a frame is an opaque byte
// string of 1..kMaxFrameBytes bytes, delivered whole, once, and in order per direction.
//
// A backend provides both ends: a ServerEndpoint (one per chatd instance, many clients) and a
// ClientConnection (one per chat process). Backends are chosen by name through factory.hpp.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/access.hpp"
#include "common/limits.hpp"
#include "common/time.hpp"
#include "transport/door.hpp"

namespace chat {
class Logger;
}

namespace chat::transport {

using Frame = std::vector<std::byte>;

// Names one client connection of a ServerEndpoint. Never reused during the endpoint's life.
using ClientId = std::uint64_t;

enum class SendResult {
  kSent,  // the whole frame was queued for delivery
  kFull,  // the peer's buffers are full; nothing was queued
  kGone,  // the peer is gone or the connection closed; nothing was queued
};

// Every send() of every backend starts with this: a frame is 1..kMaxFrameBytes bytes.
inline void check_frame_size(std::size_t bytes) {
  if (bytes == 0 || bytes > kMaxFrameBytes) {
    throw std::length_error("transport: frame of " + std::to_string(bytes) +
                            " bytes is outside 1.." + std::to_string(kMaxFrameBytes));
  }
}

// What a ServerEndpoint reports from poll().
struct ServerEvent {
  enum class Kind {
    kConnected,     // a new client; `pid` and `uid` are its process and account (kernel's word)
    kFrame,         // `frame` arrived from `client`
    kWritable,      // a send to `client` that returned kFull may now succeed
    kDisconnected,  // `client` is gone; `gone` says how; release it with close()
  };
  enum class Gone {
    kClosed,     // the client closed its connection
    kDied,       // the client process exited or was killed
    kMalformed,  // the client broke the transport's rules (bad bytes); `detail` says how
  };
  Kind kind = Kind::kFrame;
  ClientId client = 0;
  pid_t pid = 0;
  uid_t uid = 0;
  Frame frame;
  Gone gone = Gone::kClosed;
  std::string detail;
};

// The server side of a transport, listening in the instance's runtime dir.
//
// Threading: poll() is called by one thread (the I/O thread). send(), close() and wake() may
// be called from any thread; send() and close() calls for the same client must not overlap.
class ServerEndpoint {
 public:
  virtual ~ServerEndpoint() = default;

  // Waits until there is something to report, wake() is called, or `deadline` passes, then
  // appends what happened to `events` (possibly nothing). Every kConnected client must later be
  // released with close(), also after a kDisconnected event for it.
  virtual void poll(std::vector<ServerEvent>& events, Deadline deadline) = 0;

  // Queues one frame for `client` without blocking (std::length_error if the frame is empty
  // or larger than kMaxFrameBytes). kFull means the client's transport buffers
  // (at most kMaxTransportBufferBytes) are full: keep the frame, and retry after kWritable.
  virtual SendResult send(ClientId client, std::span<const std::byte> frame) = 0;

  // Queues `frames` for `client` in order, as send() would one by one, but rings the client's
  // doorbell at most once, after the last frame queued: a batch costs a sleeping client one
  // wake-up instead of one per frame. Returns how many frames were queued; `stopped` is kSent
  // if that is all of them, else the result (kFull or kGone) of the frame that stopped it.
  // The default calls send() for each frame.
  virtual std::size_t send_batch(ClientId client,
                                 std::span<const std::span<const std::byte>> frames,
                                 SendResult& stopped) {
    std::size_t sent = 0;
    stopped = SendResult::kSent;
    for (const auto& frame : frames) {
      stopped = send(client, frame);
      if (stopped != SendResult::kSent) break;
      ++sent;
    }
    return sent;
  }

  // Ends the connection and frees everything held for it; the client sees it closed once it
  // has read what was sent before. Later send()s for `client` return kGone.
  virtual void close(ClientId client) = 0;

  // Makes a poll() in progress return soon.
  virtual void wake() = 0;

  // Bytes sent to `client` that still sit in the transport (its ring, pipe, socket or queue)
  // because the client has not taken them yet; 0 for a client that is gone. Frames refused
  // with kFull are not counted: they are still the caller's. `uds` reports the kernel's buffer
  // memory for them, bookkeeping included. Same threading rule as send().
  virtual std::size_t buffered(ClientId client) = 0;

  // The names of every IPC object this endpoint created, for instance.json and --cleanup.
  virtual nlohmann::json objects() const = 0;
};

enum class ReceiveResult {
  kFrame,    // `frame` holds the next frame
  kTimeout,  // the deadline passed, or wake() was called
  kClosed,   // the server closed this connection (see server_alive())
};

// The client side: one connection to one server.
//
// Threading: one thread may send() while another receive()s; wake() from any thread.
class ClientConnection {
 public:
  virtual ~ClientConnection() = default;

  // Sends one frame, waiting while the link is full until `deadline` (then kFull). kGone if
  // the server closed the connection or died. std::length_error if the frame is empty or
  // larger than kMaxFrameBytes.
  virtual SendResult send(std::span<const std::byte> frame, Deadline deadline) = 0;

  // Waits until the next frame arrives or `deadline`. Frames sent before the server closed the
  // connection are all received before kClosed. Detects a dead server within 1 s.
  virtual ReceiveResult receive(Frame& frame, Deadline deadline) = 0;

  // False once the server process is known to have exited.
  virtual bool server_alive() = 0;

  // Makes a receive() in progress return kTimeout soon.
  virtual void wake() = 0;
};

// Where and how a server listens.
struct ListenOptions {
  std::filesystem::path dir;    // BASE/INSTANCE: exists, flocked by this process
  std::string instance;         // the instance name
  std::size_t max_clients = 0;  // connections the endpoint must be able to hold at once
  const Logger* logger = nullptr;
  AccessPolicy access;  // who the door admits (door.hpp)
};

// What a client needs to connect.
struct ConnectOptions {
  std::filesystem::path dir;
  std::string instance;
  Deadline deadline = kNoDeadline;
  // What the server handed this client at the door: the channel's description and descriptors.
  door::Pass pass;
};

// Thrown by connect() when the server cannot be reached or refuses the connection.
class ConnectError : public std::runtime_error {
 public:
  // kPermission: a server runs, but does not admit this account (the text says why).
  enum class Kind { kNoServer, kRefused, kPermission, kTimeout, kOther };
  ConnectError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// What --cleanup and a restarting server pass to a backend to remove a dead server's objects.
struct CleanupOptions {
  std::filesystem::path dir;  // BASE/INSTANCE, locked by the caller
  pid_t dead_server_pid = 0;  // from the stale instance.json, or 0 if unknown
  nlohmann::json objects;     // from the stale instance.json, or null if unknown
};

}  // namespace chat::transport

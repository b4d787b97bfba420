// The front door: the one rendezvous every transport shares. A client connects to
// `door.sock` (AF_UNIX SOCK_SEQPACKET) in the instance dir; the server learns who it is from the
// kernel (SO_PEERCRED, SO_PEERGROUPS, SO_PEERPIDFD), checks the access policy, and answers with
// one record: a grant carrying the client's private channel — descriptors passed with
// SCM_RIGHTS (a shared-memory segment, a pipe pair, an eventfd) and ids of objects handed to
// that account alone — or a refusal that says why. It is how Wayland, PipeWire and D-Bus hand
// out channels: no object anyone else could open by name, nothing a client can write that
// another client reads, and an identity no client can forge.
//
// The door's record is JSON (it is small, rare and written only by the server); the channel's
// frames never pass through it, except for `uds`, whose channel is the door connection itself.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/access.hpp"
#include "common/time.hpp"
#include "common/unique_fd.hpp"

namespace chat {
class Logger;
}

namespace chat::transport::door {

inline constexpr char kSocketName[] = "door.sock";
// Descriptors one grant may carry.
inline constexpr std::size_t kMaxGrantFds = 8;

// A client at the door, as the kernel reports it.
struct Guest {
  UniqueFd socket;  // the accepted connection: non-blocking, close-on-exec
  Peer peer;
  UniqueFd pidfd;  // the peer process (PID-reuse safe); empty if it has exited already
};

// What the server hands an admitted client.
struct Grant {
  std::string transport;
  std::string instance;
  nlohmann::json channel = nlohmann::json::object();  // the backend's own description
  std::vector<int> fds;  // passed with SCM_RIGHTS; still the caller's to close
};

// The server's door. Owned and polled by the endpoint's I/O thread.
class Door {
 public:
  // Binds DIR/door.sock with the policy's mode (and the policy's group: the server's account
  // must be in it) and listens. Throws std::system_error.
  Door(const std::filesystem::path& dir, AccessPolicy access, const Logger* logger);
  ~Door();
  Door(const Door&) = delete;
  Door& operator=(const Door&) = delete;

  // Poll this for POLLIN: a client is waiting.
  int fd() const { return socket_.get(); }
  const std::filesystem::path& path() const { return path_; }

  // Accepts waiting clients until one is admitted, and returns it; nullopt once none waits.
  // Clients outside the policy are refused with a record that says so and never returned.
  // Out of descriptors, the waiting client is refused ("server_busy") rather than left
  // waiting, so the listening socket does not stay readable and spin its poller.
  std::optional<Guest> accept();

 private:
  UniqueFd socket_;
  UniqueFd spare_;  // given up to accept and refuse one client when out of descriptors
  std::filesystem::path path_;
  AccessPolicy access_;
  uid_t uid_;
  const Logger* logger_;
};

// Sends the grant; false if the client has gone (its connection is then useless).
bool grant(int socket, const Grant& g);
// Sends a refusal record: `code` is machine-readable (permission_denied, server_full,
// server_busy), `text` says why in words.
void refuse(int socket, std::string_view code, std::string_view text);

// What a client got at the door.
struct Pass {
  UniqueFd socket;  // the door connection (blocking, close-on-exec)
  std::string transport;
  std::string instance;
  pid_t server_pid = 0;  // from SO_PEERCRED, not from anything the server wrote
  uid_t server_uid = 0;
  UniqueFd server_pidfd;
  nlohmann::json channel;
  std::vector<UniqueFd> fds;
};

// Connects to DIR/door.sock and waits for the answer until `deadline`. Checks that DIR is a
// directory (no symlink) that only its owner can write, and that the server is that owner.
// Throws ConnectError: kNoServer (nothing listens), kPermission (the kernel or the server
// refused this account), kRefused (server full or busy), kTimeout, kOther (with the reason).
Pass enter(const std::filesystem::path& dir, Deadline deadline);

// The peer of a connected Unix socket, from the kernel. Throws std::system_error.
Peer peer_of(int socket);

}  // namespace chat::transport::door

// The server's doorbell for transports whose data the server cannot poll (rings in shared
// memory, SysV message queues). Each client gets its own eventfd, passed through the door, and
// every client reads one flag page the server writes: the client rings its eventfd only while
// the server says it sleeps. No client can write anything another client's wake-up depends on:
// the page is a sealed memfd clients can only map read-only, and an eventfd is a kernel object
// of that client alone, so a hostile client can wake the server (and pay for it) but never
// keep it asleep. The server sleeps in epoll on every client's eventfd at once.
//
// The flag follows the usual Dekker order: the server sets it, then re-checks every source
// before it blocks; a client publishes its data, then reads the flag.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/unique_fd.hpp"

namespace chat::transport {

// Server side: the flag page. Thread-safe.
class ServerBell {
 public:
  ServerBell();  // throws std::system_error
  ~ServerBell();
  ServerBell(const ServerBell&) = delete;
  ServerBell& operator=(const ServerBell&) = delete;

  // The sealed memfd to pass to each client (read-only for them).
  int page_fd() const { return page_.get(); }

  // Before blocking: set, then re-check every source (with a full fence between).
  void sleeping();
  // After waking (or finding work on the re-check).
  void awake();

 private:
  UniqueFd page_;
  std::atomic<std::uint32_t>* flag_ = nullptr;
};

// Client side: the server's page (read-only) and this client's eventfd. Thread-safe.
class ClientBell {
 public:
  // Maps `page` read-only; `event` is this client's eventfd. Throws std::system_error.
  ClientBell(UniqueFd page, UniqueFd event);
  ~ClientBell();
  ClientBell(ClientBell&&) noexcept;
  ClientBell& operator=(ClientBell&&) = delete;
  ClientBell(const ClientBell&) = delete;

  // Call after publishing data: wakes the server if it sleeps.
  void ring();
  // Wakes the server whatever the flag says (goodbyes, or when unsure).
  void ring_always();

 private:
  UniqueFd event_;
  const std::atomic<std::uint32_t>* flag_ = nullptr;
};

// A new eventfd for one client's bell (non-blocking, close-on-exec): the server polls it and
// passes the same descriptor to the client through the door.
UniqueFd make_bell_eventfd();

}  // namespace chat::transport

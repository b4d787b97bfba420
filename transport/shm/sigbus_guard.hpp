// A client that holds a read-write descriptor of a file the server maps can truncate it; the
// server's next access past the new end would then take SIGBUS and kill chatd. As
// libwayland-server does for wl_shm pools, the server registers each client mapping here: a
// SIGBUS inside one is answered by mapping anonymous zero pages over the whole segment
// (MAP_FIXED), so the faulting access completes and reads zeros, and the segment is flagged;
// the engine then drops that client as malformed. A SIGBUS anywhere else goes to the handler
// that was there before (the default one kills, as it would have).
//
// Segments that cannot shrink under the server (a sealed memfd, SysV memory) need no guard,
// but a registration costs nothing and covers any source.
#pragma once

#include <cstddef>

namespace chat::transport::shm {

// Guards [base, base + bytes) for its lifetime; the mapping must outlive the guard. Thread-safe.
class SigbusGuard {
 public:
  // Installs the process's SIGBUS handler on first use. Throws std::system_error when every
  // guard slot is taken (or sigaction fails).
  SigbusGuard(void* base, std::size_t bytes);
  ~SigbusGuard();
  SigbusGuard(const SigbusGuard&) = delete;
  SigbusGuard& operator=(const SigbusGuard&) = delete;

  // True once an access to the range faulted (the range now holds zero pages).
  bool tripped() const;

 private:
  std::size_t slot_;
};

}  // namespace chat::transport::shm

// The layout of the shared memory of the cond, signal and mmap backends.
//
//   control segment (one per instance; its name is in instance.json)
//     CtlBlock: header, the hello lock, the server's WakeArea, kHelloEntries hello entries
//   client segment (one per connection; created by the server at the handshake)
//     ClientBlock: header, two WakeAreas, the up ring (client -> server) and the down ring
//
// A client claims a free hello entry under the hello lock, asks, and sleeps on the entry's
// WakeArea; the server creates the client's segment, grants it and removes its name once the
// client says it has mapped it. Fields marked "server" are written only by the server and
// trusted by clients; the server trusts nothing a client can write.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "transport/shm/ring.hpp"
#include "transport/shm/robust_mutex.hpp"
#include "transport/shm/wake.hpp"

namespace chat::transport::shm {

inline constexpr std::uint64_t kCtlMagic = 0x4950434854435430ULL;     // "IPCHTCT0"
inline constexpr std::uint64_t kClientMagic = 0x4950434854434c30ULL;  // "IPCHTCL0"
inline constexpr std::uint32_t kLayoutVersion = 1;
inline constexpr std::size_t kHelloEntries = 16;
inline constexpr std::size_t kSegmentNameBytes = 96;
inline constexpr std::uint32_t kUpRingBytes = 64 << 10;
inline constexpr std::uint32_t kDownRingBytes = 128 << 10;

enum HelloState : std::uint32_t {
  kHelloFree = 0,
  kHelloClaimed,    // a client took it under the hello lock and is filling it in
  kHelloRequested,  // the client asks for a connection
  kHelloGranted,    // server: `segment` names the client's new segment
  kHelloRefused,    // server: no room
};

struct HelloEntry {
  std::atomic<std::uint32_t> state;
  std::int32_t pid;     // client
  std::uint64_t nonce;  // client; echoed in the ClientBlock so the client knows it is its own
  char segment[kSegmentNameBytes];  // server
  WakeArea client_wake;             // the client sleeps here while it waits for the answer
};

struct CtlBlock {
  std::uint64_t magic;  // server
  std::uint32_t version;
  std::uint32_t total_bytes;
  std::int32_t server_pid;
  RobustMutex hello_lock;  // clients hold it while claiming a hello entry
  WakeArea server_wake;    // the server's I/O thread sleeps here
  HelloEntry hello[kHelloEntries];
};

struct ClientBlock {
  std::uint64_t magic;  // server
  std::uint32_t version;
  std::uint32_t up_bytes;
  std::uint32_t down_bytes;
  std::uint64_t nonce;                       // server: copied from the hello entry
  std::atomic<std::uint32_t> attached;       // client: it has mapped the segment
  std::atomic<std::uint32_t> client_closed;  // client: goodbye, no more frames
  std::atomic<std::uint32_t> server_closed;  // server: connection closed, read what is left
  WakeArea rx_wake;  // the client's receiving thread sleeps here (down data)
  WakeArea tx_wake;  // the client's sending thread sleeps here (room in the up ring)
  RingControl up;
  RingControl down;
  alignas(64) std::byte up_data[kUpRingBytes];
  alignas(64) std::byte down_data[kDownRingBytes];
};

static_assert(sizeof(ClientBlock) <= (256u << 10), "DESIGN.md: at most 256 KiB per client");

}  // namespace chat::transport::shm

// The layout of the shared memory of the cond, signal and mmap backends: one segment per
// client, created by the server when the client comes through the door and reached only
// through what the grant passes (a descriptor, or a SysV id for `signal`).
//
//   ClientBlock: header, two WakeAreas, the up ring (client -> server) and the down ring
//
// Fields marked "server" are written only by the server and trusted by clients; the server
// trusts nothing a client can write. The server's own wake-up is not in here: it is the
// server bell (transport/bell.hpp), a page clients can only read and an eventfd per client.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "transport/shm/ring.hpp"
#include "transport/shm/wake.hpp"

namespace chat::transport::shm {

inline constexpr std::uint64_t kClientMagic = 0x4950434854434c30ULL;  // "IPCHTCL0"
inline constexpr std::uint32_t kLayoutVersion = 2;
inline constexpr std::uint32_t kUpRingBytes = 64 << 10;
inline constexpr std::uint32_t kDownRingBytes = 128 << 10;

struct ClientBlock {
  std::uint64_t magic;  // server
  std::uint32_t version;
  std::uint32_t up_bytes;
  std::uint32_t down_bytes;
  // Unused since the door. Kept so the block keeps layout 1's size, by which cleanup still
  // recognises the SysV segments a pre-door `signal` server left behind.
  std::uint64_t reserved;
  std::atomic<std::uint32_t> attached;
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

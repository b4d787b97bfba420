// The messages of the `msgq` backend, shared by the backend and its tests.
//
// Every admitted client gets two queues of its own, created by the server with IPC_PRIVATE (no
// key: nobody finds them by name) and then handed to the client's account alone (IPC_SET:
// owner uid = the client's, mode 0600; the server keeps its access as their creator). Their ids
// reach the client in the door's grant, as the channel {"version", "up", "down"}, together
// with two descriptors: the server bell's page and the client's bell eventfd (bell.hpp).
//
// The up queue (client to server); the server drains it with IPC_NOWAIT when the client rings:
//   mtype kData: a frame, 1..kMaxFrameBytes bytes
//   mtype kBye:  no bytes; a goodbye, not a death
// The down queue (server to client); the client blocks in msgrcv on it:
//   mtype kData: a frame, 1..kMaxFrameBytes bytes
//   mtype kWake: WakeMsg, put there by the client itself to wake its receive()
// Anything else in the up queue disconnects that client (only its account can write there);
// anything else in the down queue is ignored. The server removes both queues when the
// connection ends; the client sees the down queue's removal (EIDRM) as the end, after it has
// read everything (client.cpp: a closed client's down queue is kept until it is empty).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/limits.hpp"

namespace chat::transport::msgq::wire {

inline constexpr std::uint32_t kVersion = 2;

// Channel json keys.
inline constexpr char kChannelVersion[] = "version";
inline constexpr char kChannelUp[] = "up";
inline constexpr char kChannelDown[] = "down";
// Descriptors of the grant, in this order.
inline constexpr std::size_t kFdBellPage = 0;
inline constexpr std::size_t kFdBellEvent = 1;
inline constexpr std::size_t kGrantFds = 2;

inline constexpr long kData = 1;
inline constexpr long kBye = 2;   // up queue only
inline constexpr long kWake = 3;  // down queue only

// A wake-up a client put into its own down queue. Any process of the client's account can
// forge one; `secret` tells ours from those, and a forged one is no more than a spurious
// wake-up.
struct WakeMsg {
  std::uint64_t secret = 0;
};

// A msgsnd/msgrcv buffer; one byte more than any valid message, so that a longer one (cut by
// MSG_NOERROR) is recognised.
struct Buffer {
  long mtype = 0;
  std::byte text[kMaxFrameBytes + 1];
};

}  // namespace chat::transport::msgq::wire

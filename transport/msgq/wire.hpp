// The messages of the `msgq` backend, shared by the backend and its tests.
//
// The server queue (key: ftok on DIR/msgq.key) carries everything towards the server, read in
// arrival order whatever the type:
//   mtype kHello: HelloMsg, a client asking for a connection
//   mtype kUp:    UpHeader + payload, from a client that has one; `token` is the secret the
//                 server gave that client alone, so a forged `client` is recognised and dropped
//   mtype kMark:  MarkMsg, the server's own marker (see msgq.cpp: deaths are reported after it)
//   mtype kWake:  WakeMsg, the server's own wake-up for its I/O thread blocked in msgrcv
// Each client has a queue of its own, created by the server 0600 with the key client_key(nonce)
// of the client's hello, so the client finds it without a reply channel:
//   mtype kWelcome: WelcomeMsg, first: the client id and the token
//   mtype kData:    a frame, 1..kMaxFrameBytes bytes
//   mtype kWake:    WakeMsg, put there by the client itself to wake its receive()
// The server removes a client's queue when the connection ends; the client sees that (EIDRM)
// as the end of the connection, after it has read everything (see msgq.cpp: a closed client's
// queue is kept until it is empty).
#pragma once

#include <sys/ipc.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "common/limits.hpp"

namespace chat::transport::msgq::wire {

inline constexpr std::uint32_t kMagic = 0x514d4349;  // "ICMQ"
inline constexpr std::uint32_t kVersion = 1;

// Types in the server queue.
inline constexpr long kHello = 1;
inline constexpr long kUp = 2;
inline constexpr long kMark = 3;
// Types in a client queue.
inline constexpr long kWelcome = 2;
inline constexpr long kData = 3;
// In either queue: a wake-up its reader's own process put there. Anybody of our uid can forge
// one; `secret` tells ours from those, and a forged one is no more than a spurious wake-up.
inline constexpr long kWake = 4;

struct HelloMsg {
  std::uint32_t magic = kMagic;
  std::uint32_t version = kVersion;
  std::int32_t pid = 0;
  std::uint32_t reserved = 0;
  std::uint64_t nonce = 0;
};
static_assert(sizeof(HelloMsg) == 24);

enum class UpKind : std::uint32_t {
  kData = 1,   // payload: a frame
  kReady = 2,  // the welcome was read; no payload
  kBye = 3,    // a goodbye, not a death; no payload
};

struct UpHeader {
  std::uint64_t client = 0;
  std::uint64_t token = 0;
  UpKind kind = UpKind::kData;
  std::uint32_t reserved = 0;
};
static_assert(sizeof(UpHeader) == 24);

struct MarkMsg {
  std::uint64_t secret = 0;
  std::uint64_t client = 0;
};

struct WelcomeMsg {
  std::uint32_t magic = kMagic;
  std::uint32_t version = kVersion;
  std::uint64_t nonce = 0;
  std::uint64_t client = 0;
  std::uint64_t token = 0;
};
static_assert(sizeof(WelcomeMsg) == 32);

struct WakeMsg {
  std::uint64_t secret = 0;
};

// The largest message either side sends (msgmax here is 8192).
inline constexpr std::size_t kMaxMessageBytes = sizeof(UpHeader) + kMaxFrameBytes;

// A msgsnd/msgrcv buffer; one byte more than any valid message, so that a longer one (cut by
// MSG_NOERROR) is recognised.
struct Buffer {
  long mtype = 0;
  std::byte text[kMaxMessageBytes + 1];
};

// The key of the queue the server creates for the client whose hello carries `nonce`.
inline key_t client_key(std::uint64_t nonce) {
  const std::uint64_t h = nonce * 0x9e3779b97f4a7c15ULL;
  const auto key = static_cast<key_t>((h >> 33) & 0x7fffffff);
  return key == IPC_PRIVATE ? 1 : key;
}

}  // namespace chat::transport::msgq::wire

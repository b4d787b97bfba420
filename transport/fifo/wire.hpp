// The bytes on the `fifo` backend's named pipes, shared by the backend and its tests.
//
// Rendezvous: DIR/hello.fifo is written by every client and read by the server. A client writes
// one 32-byte HelloRecord {pid, nonce} with a single write(); it is smaller than PIPE_BUF, so
// records of different clients never interleave. Garbage can still sit between records (any
// process of ours can write there), so a record carries a magic number and a checksum and the
// server resynchronises on the next valid record.
//
// The server answers a hello by creating the client's two FIFOs, DIR/<pid>-<nonce>.up (client to
// server) and .down (server to client), both 0600, under temporary names first and then renamed
// into place, so a client that sees the name sees a finished FIFO. The client learns the names
// from its own hello and waits for `.down` to appear (inotify), opens both, and writes a kReady
// frame; the server then unlinks both names (the open descriptors stay) and reports the client
// connected. A hello whose client never gets ready is dropped after a deadline.
//
// On a client's own pipes a frame is a 4-byte header {length (u16, little endian), kind, check}
// and `length` payload bytes. Each pipe has a single writer, so frames cannot interleave; a
// frame with header may exceed PIPE_BUF by the 4 header bytes, so a non-blocking write can be
// partial: the writer keeps the unwritten rest and finishes it before the next frame, and the
// reader reassembles frames across reads.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "common/limits.hpp"

namespace chat::transport::fifo::wire {

inline constexpr char kHelloFifo[] = "hello.fifo";
inline constexpr std::uint32_t kMagic = 0x4f464349;  // "ICFO"
inline constexpr std::uint32_t kVersion = 1;

struct HelloRecord {
  std::uint32_t magic = kMagic;
  std::uint32_t version = kVersion;
  std::int32_t pid = 0;
  std::uint32_t reserved = 0;
  std::uint64_t nonce = 0;
  std::uint64_t check = 0;  // hello_check() of the fields above
};
static_assert(sizeof(HelloRecord) == 32);

// FNV-1a over everything before `check`.
inline std::uint64_t hello_check(const HelloRecord& r) {
  unsigned char bytes[offsetof(HelloRecord, check)];
  std::memcpy(bytes, &r, sizeof bytes);
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

inline HelloRecord make_hello(pid_t pid, std::uint64_t nonce) {
  HelloRecord r;
  r.pid = pid;
  r.nonce = nonce;
  r.check = hello_check(r);
  return r;
}

inline bool valid_hello(const HelloRecord& r) {
  return r.magic == kMagic && r.version == kVersion && r.reserved == 0 && r.check == hello_check(r);
}

// "<pid>-<16 hex digits of nonce>"; the client's FIFOs are this plus ".up" / ".down".
inline std::string client_stem(pid_t pid, std::uint64_t nonce) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%d-%016llx", static_cast<int>(pid),
                static_cast<unsigned long long>(nonce));
  return buf;
}
inline std::string up_name(pid_t pid, std::uint64_t nonce) {
  return client_stem(pid, nonce) + ".up";
}
inline std::string down_name(pid_t pid, std::uint64_t nonce) {
  return client_stem(pid, nonce) + ".down";
}

enum class Kind : std::uint8_t {
  kData = 1,   // a frame: 1..kMaxFrameBytes payload bytes
  kReady = 2,  // client to server, first thing on .up: both ends are open; no payload
  kBye = 3,    // client to server, last thing on .up: a goodbye, not a death; no payload
};

inline constexpr std::size_t kHeaderBytes = 4;
// The most a frame occupies on a pipe.
inline constexpr std::size_t kMaxWireFrameBytes = kHeaderBytes + kMaxFrameBytes;

inline std::byte header_check(std::size_t length, Kind kind) {
  return std::byte{static_cast<std::uint8_t>(0x5a ^ (length & 0xff) ^ (length >> 8) ^
                                             static_cast<std::uint8_t>(kind))};
}

inline std::array<std::byte, kHeaderBytes> encode_header(Kind kind, std::size_t length) {
  return {std::byte{static_cast<std::uint8_t>(length & 0xff)},
          std::byte{static_cast<std::uint8_t>(length >> 8)},
          std::byte{static_cast<std::uint8_t>(kind)}, header_check(length, kind)};
}

struct Header {
  Kind kind = Kind::kData;
  std::size_t length = 0;
};

// Decodes the header at `p` (kHeaderBytes bytes); nullopt with `error` set if no valid frame
// starts there: a bad check byte, an unknown kind, or a length outside what the kind allows.
inline std::optional<Header> decode_header(const std::byte* p, std::string& error) {
  const std::size_t length =
      std::to_integer<std::size_t>(p[0]) | (std::to_integer<std::size_t>(p[1]) << 8);
  const auto kind_byte = std::to_integer<std::uint8_t>(p[2]);
  const Kind kind = static_cast<Kind>(kind_byte);
  if (p[3] != header_check(length, kind)) {
    error = "bad frame header check byte";
    return std::nullopt;
  }
  if (kind == Kind::kData) {
    if (length == 0 || length > kMaxFrameBytes) {
      error = "data frame of " + std::to_string(length) + " bytes (allowed 1.." +
              std::to_string(kMaxFrameBytes) + ")";
      return std::nullopt;
    }
  } else if (kind == Kind::kReady || kind == Kind::kBye) {
    if (length != 0) {
      error = "control frame with " + std::to_string(length) + " payload bytes";
      return std::nullopt;
    }
  } else {
    error = "unknown frame kind " + std::to_string(kind_byte);
    return std::nullopt;
  }
  return Header{kind, length};
}

}  // namespace chat::transport::fifo::wire

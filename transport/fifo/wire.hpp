// The bytes of the `fifo` backend, shared by the backend and its tests.
//
// Rendezvous: the front door (door.hpp). For each admitted client the server makes one pair of
// FIFOs in the instance dir under random names, opens all four ends itself, passes the client
// its two (the writing end of `up`, the reading end of `down`) with SCM_RIGHTS, and unlinks both
// names before it grants the next client. The grant's channel description is
// {"version": kVersion, "fds": ["up", "down"]}: the descriptors in that order.
//
// On a client's pipes a frame is a 4-byte header {length (u16, little endian), kind, check}
// and `length` payload bytes. Each pipe has a single writer, so frames cannot interleave; a
// frame with header may exceed PIPE_BUF by the 4 header bytes, so a non-blocking write can be
// partial: the writer keeps the unwritten rest and finishes it before the next frame, and the
// reader reassembles frames across reads.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "common/limits.hpp"

namespace chat::transport::fifo::wire {

// Of the channel description; 1 was the hello-FIFO handshake.
inline constexpr int kVersion = 2;
inline constexpr char kUp[] = "up";
inline constexpr char kDown[] = "down";

enum class Kind : std::uint8_t {
  kData = 1,  // a frame: 1..kMaxFrameBytes payload bytes
  // 2 was kReady, the end of the hello-FIFO handshake; the door made it unnecessary.
  kBye = 3,  // client to server, last thing on `up`: a goodbye, not a death; no payload
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
  } else if (kind == Kind::kBye) {
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

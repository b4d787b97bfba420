// The limits of DESIGN.md "Names and limits", in one place.
#pragma once

#include <cstddef>

namespace chat {

inline constexpr std::size_t kMaxNameBytes = 32;    // nick or room
inline constexpr std::size_t kMaxTextBytes = 4000;  // one message
// Largest encoded frame any transport must carry: equal to PIPE_BUF so a FIFO write of one
// frame is atomic. The codec guarantees every message it encodes fits.
inline constexpr std::size_t kMaxFrameBytes = 4096;
inline constexpr std::size_t kDefaultClientQueueBytes = 1 << 20;
// What a client's transport buffers (rings, socket, FIFO, queue) may hold at most.
inline constexpr std::size_t kMaxTransportBufferBytes = 256 << 10;
inline constexpr char kDefaultRoom[] = "lobby";
inline constexpr char kDefaultInstance[] = "default";

}  // namespace chat

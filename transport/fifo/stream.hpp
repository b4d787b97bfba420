// The frame stream on one pipe of the `fifo` backend (wire.hpp): laying a frame out for one
// write(), reassembling frames from whatever the reads return, and moving bytes through a
// non-blocking pipe. Shared by the server and the client.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "transport/fifo/wire.hpp"
#include "transport/transport.hpp"

namespace chat::transport::fifo {

// Header and payload of one frame, laid out for a single write().
struct WireFrame {
  std::array<std::byte, wire::kMaxWireFrameBytes> bytes;
  std::size_t size = 0;

  WireFrame(wire::Kind kind, std::span<const std::byte> payload);
  std::span<const std::byte> view() const { return {bytes.data(), size}; }
};

// Reassembles frames from the bytes of one pipe, whatever the boundaries of the reads. The
// bytes are the peer's: anything that is not a frame is reported, never trusted.
class FrameReader {
 public:
  enum class Result { kFrame, kNeedMore, kMalformed };

  void append(const std::byte* p, std::size_t n);

  // Takes the next whole frame off the front. kMalformed (with `error`) if the bytes there are
  // not a frame header; the stream cannot be trusted after that.
  Result next(wire::Header& header, Frame& payload, std::string& error);

 private:
  static constexpr std::size_t kCompactAt = 64 << 10;
  std::vector<std::byte> buf_;
  std::size_t begin_ = 0;
};

// What reading a non-blocking pipe brought.
struct Fill {
  std::size_t bytes = 0;  // appended to the reader
  bool end = false;       // end-of-file (every writer has closed) or a read error
};

// Reads what the pipe `fd` holds into `reader`, through `buffer`, until it is empty, `limit`
// bytes came, or it ends.
Fill fill(int fd, FrameReader& reader, std::span<std::byte> buffer, std::size_t limit);

// What a non-blocking pipe did with the bytes offered to it.
enum class Flow {
  kDone,     // all of them went in
  kBlocked,  // the pipe is full; the rest is still to be written
  kBroken,   // nobody reads the pipe any more (EPIPE), or the write failed otherwise
};

// Writes as much of `bytes` as the pipe takes now; `written` says how much that was. A write of
// at most PIPE_BUF bytes goes in whole or not at all.
Flow write_now(int fd, std::span<const std::byte> bytes, std::size_t& written);

// Writes the front of `pending` as far as the pipe takes it now, and erases what went in.
Flow write_pending(int fd, std::vector<std::byte>& pending);

}  // namespace chat::transport::fifo

// One client's channel of the `fifo` backend: a pair of FIFOs the server makes in the instance
// dir and opens at all four ends itself, so that their names can go at once. What the client
// gets are descriptors (passed through the door), never a name another process could open.
#pragma once

#include <filesystem>
#include <string_view>

#include "common/unique_fd.hpp"

namespace chat::transport::fifo {

// Every end is non-blocking and close-on-exec.
struct Channel {
  UniqueFd up_read;     // the server's: what the client writes
  UniqueFd down_write;  // the server's: what the client reads
  UniqueFd up_write;    // the client's, to pass through the door
  UniqueFd down_read;   // the client's, to pass through the door
};

// Makes the pair in `dir` (mode 0600 whatever the umask, under names no other process can
// predict), opens it, limits both pipes to `pipe_bytes`, and unlinks both names before it
// returns. Throws std::system_error, leaving nothing behind either.
Channel make_channel(const std::filesystem::path& dir, int pipe_bytes);

// Names the pair may have for a moment, and the legacy names of the hello-FIFO handshake: what
// a server killed at the wrong moment may leave in its instance dir.
bool is_leftover_name(std::string_view name);

}  // namespace chat::transport::fifo

// Pinger: the measuring end of a two-process ping-pong, over any mechanism.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace chat::bench {

class Pinger {
 public:
  virtual ~Pinger() = default;
  // Sends `frame` and waits for the peer's echo into `reply`; false if the link failed or no
  // echo came within a few seconds.
  virtual bool round_trip(std::span<const std::byte> frame, std::vector<std::byte>& reply) = 0;
};

}  // namespace chat::bench

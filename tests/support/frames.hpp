// Frames for tests that talk to a transport directly: from text and back, and numbered
// frames whose content says which they are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "transport/transport.hpp"

namespace chat::test {

inline transport::Frame frame_of(const std::string& s) {
  transport::Frame f(s.size());
  std::memcpy(f.data(), s.data(), s.size());
  return f;
}

inline std::string text_of(const transport::Frame& f) {
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

// A frame of `size` bytes whose content encodes `n`: equal to patterned(n, size) only if
// nothing of it was lost, reordered or mixed with another frame's.
inline transport::Frame patterned(std::uint32_t n, std::size_t size) {
  transport::Frame f(size);
  for (std::size_t i = 0; i < size; ++i) f[i] = std::byte{static_cast<std::uint8_t>(n * 31 + i)};
  return f;
}

}  // namespace chat::test

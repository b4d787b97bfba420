// libFuzzer: protocol::decode on arbitrary bytes. Whatever it accepts must encode back to the
// same bytes (the codec has one encoding per message).
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  const auto r = chat::protocol::decode(std::span<const std::byte>(bytes, size));
  if (r.message) {
    if (!r.error.empty()) std::abort();
    const auto again = chat::protocol::encode(*r.message);
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0) std::abort();
  } else if (r.error.empty()) {
    std::abort();  // a rejection must say why
  }
  return 0;
}

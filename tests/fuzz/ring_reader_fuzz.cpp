// libFuzzer: a RingReader over a ring whose control block and bytes a hostile peer wrote.
// The input is: u64 head position, u64 tail position, then the ring's bytes. Reading must
// end in kEmpty or kCorrupt without touching memory outside the ring.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/limits.hpp"
#include "transport/shm/ring.hpp"

using namespace chat::transport::shm;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr std::uint32_t kCapacity = 8192;
  if (size < 16) return 0;
  std::uint64_t head, tail;
  std::memcpy(&head, data, 8);
  std::memcpy(&tail, data + 8, 8);
  auto control = std::make_unique<RingControl>();
  init_ring(*control);
  control->head.store(head);
  control->tail.store(tail);
  // Exactly kCapacity bytes on the heap, so ASan sees any access past the ring.
  auto ring = std::make_unique<std::byte[]>(kCapacity);
  std::memcpy(ring.get(), data + 16, std::min<std::size_t>(size - 16, kCapacity));
  RingReader reader(control.get(), ring.get(), kCapacity);
  std::vector<std::byte> frame;
  std::string why;
  for (int i = 0; i < 10000; ++i) {
    const RingStatus r = reader.read(frame, why);
    if (r == RingStatus::kEmpty || r == RingStatus::kCorrupt) break;
    if (frame.empty() || frame.size() > chat::kMaxFrameBytes) std::abort();
  }
  return 0;
}

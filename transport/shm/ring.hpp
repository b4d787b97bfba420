// A bounded single-producer single-consumer ring of length-prefixed frames in shared memory.
//
// The ring is the data; whatever wakes a sleeper is only a doorbell. Positions are 64-bit
// byte counters that only grow (index = position % capacity); a frame is a u32 length
// followed by that many bytes, wrapping at the end of the buffer.
//
// The other process may be hostile. Each side keeps its own position in private memory and
// only trusts it; the peer's position is read once per operation and checked (it must lie
// within one capacity of ours), a length must be 1..kMaxFrameBytes and fit in what was
// published, and a frame is copied out before anyone looks at it. A check that fails reports
// kCorrupt and the connection is dropped; nothing is read or written out of bounds.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace chat::transport::shm {

struct RingControl {
  alignas(64) std::atomic<std::uint64_t> head;  // consumer's position: bytes consumed
  alignas(64) std::atomic<std::uint64_t> tail;  // producer's position: bytes published
  // The producer found the ring full and waits for the consumer to make room.
  alignas(64) std::atomic<std::uint32_t> producer_waiting;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

inline constexpr std::size_t kFrameLengthBytes = 4;

// Initialises the control block of a new ring (creator only).
void init_ring(RingControl& c);

enum class RingStatus { kOk, kEmpty, kFull, kCorrupt };

// The producer's end. Not thread-safe: one producer at a time.
class RingWriter {
 public:
  RingWriter() = default;
  // `capacity` is a power of two and comes from the creator's own record, never from the
  // shared memory.
  RingWriter(RingControl* control, std::byte* data, std::uint32_t capacity);

  // kOk, kFull (nothing written), or kCorrupt (the consumer's position is impossible).
  // frame.size() must be 1..kMaxFrameBytes.
  RingStatus write(std::span<const std::byte> frame);
  // True if a frame of `bytes` would fit now. Any thread may ask (the I/O thread does, to
  // report room, while a worker writes); the answer is a hint and write() decides.
  bool has_room(std::size_t bytes) const;
  // Bytes published and not yet consumed, length prefixes included; at most the capacity
  // (the consumer's position is the consumer's to corrupt). Any thread may ask.
  std::size_t pending() const;
  // Announces that the producer waits for room and re-checks, closing the race with a
  // consumer that just made some: true if `bytes` fit now (then the flag is cleared again).
  // Any thread may call it, like has_room().
  bool wait_for_room(std::size_t bytes);
  RingControl* control() const { return c_; }

 private:
  RingControl* c_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint64_t tail_ = 0;
};

// The consumer's end. Not thread-safe: one consumer at a time.
class RingReader {
 public:
  RingReader() = default;
  RingReader(RingControl* control, std::byte* data, std::uint32_t capacity);

  // kOk with the next frame in `out`, kEmpty, or kCorrupt with the reason in `why`.
  RingStatus read(std::vector<std::byte>& out, std::string& why);
  // True if the producer has published bytes we have not consumed.
  bool readable() const { return c_->tail.load(std::memory_order_acquire) != head_; }
  // After consuming: true (once) if the producer said it waits for room. Wake it then.
  bool producer_needs_wake();
  RingControl* control() const { return c_; }

 private:
  RingControl* c_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint64_t head_ = 0;
};

}  // namespace chat::transport::shm

#include "transport/shm/ring.hpp"

#include <cstring>

#include "common/limits.hpp"

namespace chat::transport::shm {
namespace {

void copy_in(std::byte* data, std::uint32_t cap, std::uint64_t pos, const std::byte* src,
             std::size_t n) {
  const std::size_t at = pos & (cap - 1);
  const std::size_t first = std::min<std::size_t>(n, cap - at);
  std::memcpy(data + at, src, first);
  std::memcpy(data, src + first, n - first);
}

void copy_out(const std::byte* data, std::uint32_t cap, std::uint64_t pos, std::byte* dst,
              std::size_t n) {
  const std::size_t at = pos & (cap - 1);
  const std::size_t first = std::min<std::size_t>(n, cap - at);
  std::memcpy(dst, data + at, first);
  std::memcpy(dst + first, data, n - first);
}

}  // namespace

void init_ring(RingControl& c) {
  c.head.store(0, std::memory_order_relaxed);
  c.tail.store(0, std::memory_order_relaxed);
  c.producer_waiting.store(0, std::memory_order_relaxed);
}

RingWriter::RingWriter(RingControl* control, std::byte* data, std::uint32_t capacity)
    : c_(control), data_(data), capacity_(capacity), tail_(control->tail.load()) {}

bool RingWriter::has_room(std::size_t bytes) const {
  // The published tail, not tail_: another thread may ask while the producer writes.
  const std::uint64_t used =
      c_->tail.load(std::memory_order_acquire) - c_->head.load(std::memory_order_acquire);
  return used <= capacity_ && capacity_ - used >= kFrameLengthBytes + bytes;
}

std::size_t RingWriter::pending() const {
  const std::uint64_t used =
      c_->tail.load(std::memory_order_acquire) - c_->head.load(std::memory_order_acquire);
  return used <= capacity_ ? static_cast<std::size_t>(used) : capacity_;
}

RingStatus RingWriter::write(std::span<const std::byte> frame) {
  const std::uint64_t head = c_->head.load(std::memory_order_acquire);
  const std::uint64_t used = tail_ - head;
  if (used > capacity_) return RingStatus::kCorrupt;  // head ahead of tail, or too far behind
  const std::size_t need = kFrameLengthBytes + frame.size();
  if (capacity_ - used < need) return RingStatus::kFull;
  std::byte len[kFrameLengthBytes];
  for (std::size_t i = 0; i < kFrameLengthBytes; ++i) {
    len[i] = std::byte{static_cast<std::uint8_t>(frame.size() >> (8 * i))};
  }
  copy_in(data_, capacity_, tail_, len, kFrameLengthBytes);
  copy_in(data_, capacity_, tail_ + kFrameLengthBytes, frame.data(), frame.size());
  tail_ += need;
  c_->tail.store(tail_, std::memory_order_release);
  return RingStatus::kOk;
}

bool RingWriter::wait_for_room(std::size_t bytes) {
  c_->producer_waiting.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!has_room(bytes)) return false;
  c_->producer_waiting.store(0, std::memory_order_relaxed);
  return true;
}

RingReader::RingReader(RingControl* control, std::byte* data, std::uint32_t capacity)
    : c_(control), data_(data), capacity_(capacity), head_(control->head.load()) {}

RingStatus RingReader::read(std::vector<std::byte>& out, std::string& why) {
  const std::uint64_t tail = c_->tail.load(std::memory_order_acquire);
  const std::uint64_t avail = tail - head_;
  if (avail == 0) return RingStatus::kEmpty;
  if (avail > capacity_) {
    why = "ring tail " + std::to_string(tail) + " is not within one capacity of head " +
          std::to_string(head_);
    return RingStatus::kCorrupt;
  }
  if (avail < kFrameLengthBytes) {
    why = "ring holds a torn frame (" + std::to_string(avail) + " bytes)";
    return RingStatus::kCorrupt;
  }
  std::byte len_bytes[kFrameLengthBytes];
  copy_out(data_, capacity_, head_, len_bytes, kFrameLengthBytes);
  std::uint32_t len = 0;
  for (std::size_t i = 0; i < kFrameLengthBytes; ++i) {
    len |= std::uint32_t(std::to_integer<std::uint8_t>(len_bytes[i])) << (8 * i);
  }
  if (len == 0 || len > kMaxFrameBytes || len > avail - kFrameLengthBytes) {
    why = "frame length " + std::to_string(len) + " is invalid (" + std::to_string(avail) +
          " bytes published)";
    return RingStatus::kCorrupt;
  }
  out.resize(len);
  copy_out(data_, capacity_, head_ + kFrameLengthBytes, out.data(), len);
  head_ += kFrameLengthBytes + len;
  c_->head.store(head_, std::memory_order_release);
  return RingStatus::kOk;
}

bool RingReader::producer_needs_wake() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (c_->producer_waiting.load(std::memory_order_relaxed) == 0) return false;
  return c_->producer_waiting.exchange(0, std::memory_order_acq_rel) != 0;
}

}  // namespace chat::transport::shm

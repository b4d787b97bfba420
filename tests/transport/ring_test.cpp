// The SPSC frame ring (transport/shm/ring.hpp) in plain process memory: round trips,
// wrap-around, fullness, the producer wake-up handshake, and a hostile peer on either side.
#define BOOST_TEST_MODULE ring_test
#include "transport/shm/ring.hpp"

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/limits.hpp"
#include "tests/support/main_fixture.hpp"

namespace chat::transport::shm {

// For Boost.Test's messages (found by argument-dependent lookup).
std::ostream& operator<<(std::ostream& os, RingStatus s) {
  static constexpr const char* kNames[] = {"kOk", "kEmpty", "kFull", "kCorrupt"};
  return os << kNames[static_cast<int>(s)];
}

namespace {

constexpr std::size_t kGuardBytes = 4096;
constexpr std::byte kGuardByte{0xA5};

// A ring whose data buffer of exactly `capacity` bytes sits between two guard areas, so a
// write outside the buffer shows up as a damaged guard (and a read outside it as an ASan
// report in the sanitizer builds, as the guards are part of the same allocation).
class TestRing {
 public:
  explicit TestRing(std::uint32_t capacity)
      : capacity_(capacity), memory_(capacity + 2 * kGuardBytes, kGuardByte) {
    init_ring(control_);
    writer_ = RingWriter(&control_, data(), capacity);
    reader_ = RingReader(&control_, data(), capacity);
  }

  std::byte* data() { return memory_.data() + kGuardBytes; }
  RingControl& control() { return control_; }
  RingWriter& writer() { return writer_; }
  RingReader& reader() { return reader_; }
  std::uint32_t capacity() const { return capacity_; }

  bool guards_intact() const {
    for (std::size_t i = 0; i < kGuardBytes; ++i) {
      if (memory_[i] != kGuardByte || memory_[kGuardBytes + capacity_ + i] != kGuardByte) {
        return false;
      }
    }
    return true;
  }

  // Writes a raw little-endian u32 at ring position `pos`, as a hostile producer might.
  void poke_length(std::uint64_t pos, std::uint32_t len) {
    for (std::size_t i = 0; i < kFrameLengthBytes; ++i) {
      data()[(pos + i) & (capacity_ - 1)] = std::byte{static_cast<std::uint8_t>(len >> (8 * i))};
    }
  }

 private:
  std::uint32_t capacity_;
  std::vector<std::byte> memory_;
  RingControl control_;
  RingWriter writer_;
  RingReader reader_;
};

// A frame of `size` bytes whose content depends on `n`.
std::vector<std::byte> patterned(std::uint32_t n, std::size_t size) {
  std::vector<std::byte> f(size);
  for (std::size_t i = 0; i < size; ++i) {
    f[i] = std::byte{static_cast<std::uint8_t>(n * 131 + i * 7 + (i >> 8))};
  }
  return f;
}

std::vector<std::byte> text(const std::string& s) {
  std::vector<std::byte> f(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) f[i] = std::byte{static_cast<std::uint8_t>(s[i])};
  return f;
}

// Reads and expects kCorrupt with a reason; checks nothing moved and nothing was written.
void expect_corrupt(TestRing& ring) {
  const std::uint64_t head = ring.control().head.load();
  std::vector<std::byte> out;
  std::string why;
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kCorrupt);
  BOOST_TEST(!why.empty());
  BOOST_TEST(ring.control().head.load() == head);
  BOOST_TEST(ring.guards_intact());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(ring)

BOOST_AUTO_TEST_CASE(round_trip) {
  TestRing ring(4096 * 2);
  std::vector<std::byte> out;
  std::string why;
  BOOST_TEST(!ring.reader().readable());
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kEmpty);
  BOOST_TEST(ring.writer().write(text("hello")) == RingStatus::kOk);
  BOOST_TEST(ring.writer().write(text("world!")) == RingStatus::kOk);
  BOOST_TEST(ring.reader().readable());
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST((out == text("hello")));
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST((out == text("world!")));
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kEmpty);
  BOOST_TEST(ring.control().head.load() == ring.control().tail.load());
  BOOST_TEST(ring.control().tail.load() == 2 * kFrameLengthBytes + 11);
  const auto big = patterned(1, kMaxFrameBytes);
  BOOST_TEST(ring.writer().write(big) == RingStatus::kOk);
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST((out == big));
  BOOST_TEST(ring.guards_intact());
}

BOOST_AUTO_TEST_CASE(ends_attach_to_an_existing_ring_where_it_is) {
  TestRing ring(1024);
  for (int i = 0; i < 10; ++i) BOOST_TEST(ring.writer().write(patterned(i, 50)) == RingStatus::kOk);
  std::vector<std::byte> out;
  std::string why;
  for (int i = 0; i < 4; ++i) BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  // New ends (as after a reconnect of the same process) start from the shared positions.
  RingReader reader(&ring.control(), ring.data(), ring.capacity());
  RingWriter writer(&ring.control(), ring.data(), ring.capacity());
  BOOST_TEST(writer.write(patterned(10, 50)) == RingStatus::kOk);
  for (std::uint32_t i = 4; i <= 10; ++i) {
    BOOST_TEST_REQUIRE(reader.read(out, why) == RingStatus::kOk);
    BOOST_TEST((out == patterned(i, 50)));
  }
  BOOST_TEST(reader.read(out, why) == RingStatus::kEmpty);
}

// Drives the ring with a model of its contents: kFull must come exactly when the frame and
// its length do not fit in what the model says is free.
BOOST_AUTO_TEST_CASE(wrap_around_and_exact_fullness) {
  for (const std::uint32_t capacity : {4096u * 2, 4096u * 4 + 0u, 65536u}) {
    TestRing ring(capacity);
    std::mt19937 rng(capacity);
    std::deque<std::pair<std::uint32_t, std::size_t>> queued;  // (n, size)
    std::size_t used = 0;
    std::uint32_t next = 0;
    std::size_t fulls = 0, frames = 0;
    std::vector<std::byte> out;
    std::string why;
    while (frames < 20000) {
      if (rng() % 3 != 0) {
        const std::size_t size = rng() % 4 == 0 ? 1 + rng() % kMaxFrameBytes : 1 + rng() % 64;
        const bool fits = capacity - used >= kFrameLengthBytes + size;
        BOOST_TEST_REQUIRE(ring.writer().has_room(size) == fits);
        const RingStatus s = ring.writer().write(patterned(next, size));
        BOOST_TEST_REQUIRE(s == (fits ? RingStatus::kOk : RingStatus::kFull),
                           "capacity " << capacity << " used " << used << " size " << size);
        if (s == RingStatus::kOk) {
          queued.emplace_back(next++, size);
          used += kFrameLengthBytes + size;
        } else {
          ++fulls;
        }
      } else {
        const RingStatus s = ring.reader().read(out, why);
        if (queued.empty()) {
          BOOST_TEST_REQUIRE(s == RingStatus::kEmpty);
          continue;
        }
        BOOST_TEST_REQUIRE(s == RingStatus::kOk, why);
        const auto [n, size] = queued.front();
        queued.pop_front();
        used -= kFrameLengthBytes + size;
        BOOST_TEST_REQUIRE((out == patterned(n, size)), "frame " << n << " of " << size);
        ++frames;
      }
    }
    BOOST_TEST(fulls > 0u);
    BOOST_TEST(ring.control().tail.load() > 10ull * capacity);  // wrapped many times
    BOOST_TEST(ring.guards_intact());
  }
}

BOOST_AUTO_TEST_CASE(exactly_full_and_length_split_at_the_end) {
  TestRing ring(64);
  std::vector<std::byte> out;
  std::string why;
  // 64 bytes hold exactly 4 frames of 12 (+4).
  for (int i = 0; i < 4; ++i) BOOST_TEST(ring.writer().write(patterned(i, 12)) == RingStatus::kOk);
  BOOST_TEST(ring.writer().write(patterned(9, 1)) == RingStatus::kFull);
  BOOST_TEST(!ring.writer().has_room(1));
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST(ring.writer().has_room(12));
  BOOST_TEST(!ring.writer().has_room(13));
  BOOST_TEST(ring.writer().write(patterned(4, 13)) == RingStatus::kFull);
  for (int i = 1; i < 4; ++i) BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  // Positions are now at 64; after a frame of 42 the next starts at 46, and the one after
  // that 2 bytes before the end, splitting its length.
  BOOST_TEST(ring.writer().write(patterned(5, 42)) == RingStatus::kOk);
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST(ring.control().tail.load() == 110u);
  BOOST_TEST(ring.writer().write(patterned(6, 12)) == RingStatus::kOk);  // length at 46..49
  BOOST_TEST(ring.writer().write(patterned(7, 8)) == RingStatus::kOk);   // length at 62,63,0,1
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST((out == patterned(6, 12)));
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST((out == patterned(7, 8)));
  BOOST_TEST(ring.guards_intact());
}

BOOST_AUTO_TEST_CASE(producer_wake_handshake) {
  TestRing ring(64);
  std::vector<std::byte> out;
  std::string why;
  // With room, nobody waits and nobody is woken.
  BOOST_TEST(ring.writer().wait_for_room(12));
  BOOST_TEST(ring.control().producer_waiting.load() == 0u);
  for (int i = 0; i < 4; ++i) BOOST_TEST(ring.writer().write(patterned(i, 12)) == RingStatus::kOk);
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST(!ring.reader().producer_needs_wake());
  BOOST_TEST(ring.writer().write(patterned(4, 12)) == RingStatus::kOk);
  // Full: the producer announces it waits.
  BOOST_TEST(!ring.writer().wait_for_room(12));
  BOOST_TEST(ring.control().producer_waiting.load() == 1u);
  // The consumer makes room and is told, once, to wake the producer.
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST(ring.reader().producer_needs_wake());
  BOOST_TEST(!ring.reader().producer_needs_wake());
  BOOST_TEST(ring.control().producer_waiting.load() == 0u);
  BOOST_TEST(ring.writer().write(patterned(5, 12)) == RingStatus::kOk);
  // Room appearing between the failed write and the announcement: the re-check sees it and
  // withdraws the announcement.
  BOOST_TEST(ring.writer().write(patterned(6, 12)) == RingStatus::kFull);
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST(!ring.reader().producer_needs_wake());
  BOOST_TEST(ring.writer().wait_for_room(12));
  BOOST_TEST(ring.control().producer_waiting.load() == 0u);
  BOOST_TEST(!ring.reader().producer_needs_wake());
  // Waiting for more than there is room for, even after a read, stays waiting.
  BOOST_TEST(ring.writer().write(patterned(6, 12)) == RingStatus::kOk);
  BOOST_TEST(!ring.writer().wait_for_room(40));
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  BOOST_TEST(ring.reader().producer_needs_wake());  // woken: it re-checks and waits again
  BOOST_TEST(!ring.writer().wait_for_room(40));
  BOOST_TEST(ring.control().producer_waiting.load() == 1u);
}

// ---- a hostile producer, as the consumer sees it ----

// In the hostile cases below the ring starts with a plausible length at the head, so only
// the check under test can tell that something is wrong.

BOOST_AUTO_TEST_CASE(tail_more_than_one_capacity_ahead) {
  TestRing ring(1024);
  ring.poke_length(0, 100);
  ring.control().tail.store(ring.capacity() + 1);
  expect_corrupt(ring);
  ring.control().tail.store(~0ull);
  expect_corrupt(ring);
}

BOOST_AUTO_TEST_CASE(tail_behind_head) {
  TestRing ring(1024);
  std::vector<std::byte> out;
  std::string why;
  BOOST_TEST(ring.writer().write(patterned(1, 100)) == RingStatus::kOk);
  BOOST_TEST(ring.reader().read(out, why) == RingStatus::kOk);
  ring.poke_length(ring.control().head.load(), 10);
  ring.control().tail.store(ring.control().head.load() - 1);
  expect_corrupt(ring);
}

BOOST_AUTO_TEST_CASE(torn_length) {
  TestRing ring(1024);
  ring.poke_length(0, 1);
  for (std::uint64_t tail = 1; tail < kFrameLengthBytes; ++tail) {
    ring.control().tail.store(tail);
    expect_corrupt(ring);
  }
}

BOOST_AUTO_TEST_CASE(bad_length_prefixes) {
  for (const std::uint32_t len :
       {0u, static_cast<std::uint32_t>(kMaxFrameBytes + 1), 0x7FFFFFFFu, 0xFFFFFFFFu}) {
    TestRing ring(16384);
    ring.poke_length(0, len);
    ring.control().tail.store(ring.capacity());  // everything published
    expect_corrupt(ring);
  }
  // A length larger than what was published, also across the end of the buffer.
  for (const std::uint64_t at : {0ull, 1020ull}) {
    TestRing ring(1024);
    ring.control().head.store(at);
    RingReader reader(&ring.control(), ring.data(), ring.capacity());
    ring.poke_length(at, 100);
    ring.control().tail.store(at + kFrameLengthBytes + 99);
    std::vector<std::byte> out;
    std::string why;
    BOOST_TEST(reader.read(out, why) == RingStatus::kCorrupt);
    BOOST_TEST(!why.empty());
    BOOST_TEST(ring.guards_intact());
    // With the last byte published it is a good frame.
    ring.control().tail.store(at + kFrameLengthBytes + 100);
    BOOST_TEST(reader.read(out, why) == RingStatus::kOk);
    BOOST_TEST(out.size() == 100u);
  }
}

BOOST_AUTO_TEST_CASE(largest_frame_in_a_hostile_full_ring_stays_in_bounds) {
  // The producer claims a full ring of maximal frames laid across the end of the buffer.
  TestRing ring(8192);
  const std::uint64_t start = 8192 - 2;
  ring.control().head.store(start);
  RingReader reader(&ring.control(), ring.data(), ring.capacity());
  ring.poke_length(start, kMaxFrameBytes);
  ring.control().tail.store(start + 8192);
  std::vector<std::byte> out;
  std::string why;
  BOOST_TEST(reader.read(out, why) == RingStatus::kOk);
  BOOST_TEST(out.size() == kMaxFrameBytes);
  BOOST_TEST(ring.guards_intact());
}

// ---- a hostile consumer, as the producer sees it ----

BOOST_AUTO_TEST_CASE(head_beyond_tail) {
  TestRing ring(1024);
  BOOST_TEST(ring.writer().write(patterned(1, 10)) == RingStatus::kOk);
  const std::uint64_t tail = ring.control().tail.load();
  ring.control().head.store(tail + 1);
  BOOST_TEST(ring.writer().write(patterned(2, 10)) == RingStatus::kCorrupt);
  BOOST_TEST(!ring.writer().has_room(1));
  BOOST_TEST(ring.control().tail.load() == tail);  // nothing written
  ring.control().head.store(tail + (1ull << 40));
  BOOST_TEST(ring.writer().write(patterned(2, 10)) == RingStatus::kCorrupt);
  // Positions compare modulo 2^64, so a head just below 2^64 is 15 bytes behind tail 14:
  // a legal (if implausible) position, written into the buffer like any other.
  ring.control().head.store(~0ull);
  BOOST_TEST(ring.writer().write(patterned(2, 10)) == RingStatus::kOk);
  BOOST_TEST(ring.guards_intact());
}

BOOST_AUTO_TEST_CASE(head_more_than_one_capacity_behind) {
  TestRing ring(1024);
  for (int i = 0; i < 30; ++i) {
    std::vector<std::byte> out;
    std::string why;
    BOOST_TEST_REQUIRE(ring.writer().write(patterned(i, 100)) == RingStatus::kOk);
    BOOST_TEST_REQUIRE(ring.reader().read(out, why) == RingStatus::kOk);
  }
  const std::uint64_t tail = ring.control().tail.load();
  ring.control().head.store(tail - ring.capacity() - 1);
  BOOST_TEST(ring.writer().write(patterned(2, 10)) == RingStatus::kCorrupt);
  ring.control().head.store(tail - ring.capacity());  // exactly full is fine, just full
  BOOST_TEST(ring.writer().write(patterned(2, 10)) == RingStatus::kFull);
  BOOST_TEST(ring.guards_intact());
}

// ---- two threads ----

BOOST_AUTO_TEST_CASE(two_thread_stress) {
  constexpr std::uint32_t kFrames = 200000;
  TestRing ring(64 << 10);
  const auto size_of = [](std::uint32_t n) -> std::size_t {
    return n % 64 == 0 ? 1 + (n * 977u) % kMaxFrameBytes : 1 + (n * 31u) % 200;
  };
  // The producer sleeps on a condition variable until the consumer clears producer_waiting;
  // a wait that times out while the ring has room means a lost wake-up.
  std::mutex mutex;
  std::condition_variable room;
  std::atomic<int> waits{0};
  std::atomic<bool> producer_corrupt{false}, lost_wakeup{false};
  std::thread producer([&] {
    for (std::uint32_t n = 0; n < kFrames; ++n) {
      const auto f = patterned(n, size_of(n));
      for (;;) {
        const RingStatus s = ring.writer().write(f);
        if (s == RingStatus::kOk) break;
        if (s == RingStatus::kCorrupt) {
          producer_corrupt = true;
          return;
        }
        if (ring.writer().wait_for_room(f.size())) continue;
        ++waits;
        std::unique_lock lock(mutex);
        if (!room.wait_for(lock, std::chrono::seconds(3),
                           [&] { return ring.control().producer_waiting.load() == 0; })) {
          if (ring.writer().has_room(f.size())) {
            lost_wakeup = true;  // give up at once rather than time out again and again
            return;
          }
          ring.control().producer_waiting.store(0);  // the consumer was just slow
        }
      }
    }
  });
  std::uint32_t received = 0, bad = 0;
  std::string why;
  std::vector<std::byte> out;
  while (received < kFrames) {
    const RingStatus s = ring.reader().read(out, why);
    if (s == RingStatus::kEmpty) {
      if (producer_corrupt || lost_wakeup) break;
      std::this_thread::yield();
      continue;
    }
    if (s != RingStatus::kOk) {
      BOOST_ERROR("consumer: " << why);
      break;
    }
    if (out != patterned(received, size_of(received))) ++bad;
    ++received;
    if (ring.reader().producer_needs_wake()) {
      { std::lock_guard lock(mutex); }  // the producer is waiting or about to: no lost notify
      room.notify_one();
    }
  }
  producer.join();
  BOOST_TEST(!producer_corrupt.load());
  BOOST_TEST(received == kFrames);
  BOOST_TEST(bad == 0u);
  BOOST_TEST(!lost_wakeup.load());
  BOOST_TEST_MESSAGE("producer waited " << waits.load() << " times");
  BOOST_TEST(ring.guards_intact());
}

// The server's I/O thread asks whether a client's down ring has room (to report kWritable)
// while a worker thread writes to it. Before has_room() read the published tail, that read
// raced the producer's private position (ThreadSanitizer reported it in the contract test).
BOOST_AUTO_TEST_CASE(room_may_be_asked_from_another_thread_while_the_producer_writes) {
  constexpr std::uint32_t kFrames = 20000;
  TestRing ring(16 << 10);
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> room_seen{0};
  std::thread asker([&] {
    while (!done.load(std::memory_order_acquire)) {
      if (ring.writer().has_room(kMaxFrameBytes)) ++room_seen;
      ring.writer().wait_for_room(kMaxFrameBytes);
    }
  });
  std::uint32_t received = 0;
  std::vector<std::byte> out;
  std::string why;
  for (std::uint32_t n = 0; n < kFrames; ++n) {
    const auto f = patterned(n, 1 + n % 300);
    while (ring.writer().write(f) == RingStatus::kFull) {
      BOOST_REQUIRE(ring.reader().read(out, why) == RingStatus::kOk);
      BOOST_REQUIRE(out == patterned(received, 1 + received % 300));
      ++received;
    }
  }
  for (RingStatus s; (s = ring.reader().read(out, why)) != RingStatus::kEmpty;) {
    BOOST_REQUIRE(s == RingStatus::kOk);
    BOOST_REQUIRE(out == patterned(received, 1 + received % 300));
    ++received;
  }
  done.store(true, std::memory_order_release);
  asker.join();
  BOOST_TEST_MESSAGE("the asker saw room " << room_seen.load() << " times");
  BOOST_TEST(received == kFrames);
  BOOST_TEST(ring.writer().has_room(kMaxFrameBytes));  // empty again, and the asker agrees
  BOOST_TEST(ring.guards_intact());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat::transport::shm

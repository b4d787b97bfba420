// The frame codec (common/protocol.hpp): round trips of every message, the chunking helpers,
// and rejection of every kind of malformed frame without reading out of bounds.
#include "common/protocol.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>

#include "common/limits.hpp"

namespace chat::protocol {
namespace {

Frame bytes(std::initializer_list<int> list) {
  Frame f;
  for (int b : list) f.push_back(std::byte{static_cast<std::uint8_t>(b)});
  return f;
}

// A frame with the given header fields and payload, whose length field is the payload's.
Frame raw(int version, int type, int flags, const Frame& payload) {
  const auto len = static_cast<int>(payload.size());
  Frame f = bytes({version, type, flags & 0xFF, (flags >> 8) & 0xFF, len & 0xFF, (len >> 8) & 0xFF,
                   (len >> 16) & 0xFF, (len >> 24) & 0xFF});
  f.insert(f.end(), payload.begin(), payload.end());
  return f;
}

Frame str8(const std::string& s) {
  Frame f = bytes({static_cast<int>(s.size())});
  for (char c : s) f.push_back(std::byte{static_cast<std::uint8_t>(c)});
  return f;
}

Frame operator+(Frame a, const Frame& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A copy of a frame that ends exactly where an inaccessible page begins, so that reading one
// byte past its end faults, in every build and not only under a sanitizer.
class GuardedCopy {
 public:
  explicit GuardedCopy(const Frame& f) {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    data_pages_ = (f.size() + page - 1) / page + 1;
    length_ = (data_pages_ + 1) * page;
    void* p = ::mmap(nullptr, length_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<std::byte*>(p);
    if (::mprotect(base_ + data_pages_ * page, page, PROT_NONE) != 0) {
      ::munmap(base_, length_);
      throw std::runtime_error("mprotect failed");
    }
    start_ = base_ + data_pages_ * page - f.size();
    if (!f.empty()) std::memcpy(start_, f.data(), f.size());
    size_ = f.size();
  }
  ~GuardedCopy() { ::munmap(base_, length_); }
  GuardedCopy(const GuardedCopy&) = delete;
  GuardedCopy& operator=(const GuardedCopy&) = delete;
  std::span<const std::byte> span() const { return {start_, size_}; }

 private:
  std::byte* base_ = nullptr;
  std::byte* start_ = nullptr;
  std::size_t size_ = 0, length_ = 0, data_pages_ = 0;
};

// Decodes `f` from a GuardedCopy: a read past its end crashes the test.
DecodeResult decode_exact(const Frame& f) {
  const GuardedCopy copy(f);
  return decode(copy.span());
}

// Asserts `f` is rejected with a reason; returns the reason.
std::string rejected(const Frame& f) {
  const DecodeResult r = decode_exact(f);
  BOOST_TEST(!r.message.has_value());
  BOOST_TEST(!r.error.empty());
  return r.error;
}

// One message of every type, with every field away from its default.
std::vector<Message> samples() {
  const std::string long_text(kMaxTextBytes, 'x');
  const std::string name32(kMaxNameBytes, 'n');
  return {
      Hello{"alice", "lobby"},
      Say{"lobby", "hello there", false},
      Say{"lobby", "waves", true},
      Join{"dev"},
      Part{"dev"},
      PrivateSend{"bob", "psst"},
      NickChange{"alicia"},
      WhoRequest{"lobby"},
      RoomsRequest{},
      Quit{"bye now"},
      Quit{""},
      Sync{0xFEDCBA9876543210ULL},
      WhoisRequest{"bob"},
      Welcome{"alice", "lobby"},
      RoomMessage{"lobby", "alice", "hi", 7, 1700000000123, false, false, 0},
      RoomMessage{"lobby", "alice", "waves", 8, -5, true, false, 0},
      RoomMessage{"lobby", "alice", "old", 9, 1, false, true, 0},
      RoomMessage{"lobby", "alice", "old wave", 10, 2, true, true, 0},
      RoomMessage{name32, name32, long_text, ~0ULL, INT64_MIN, true, true, 4294967295u},
      PrivateMessage{"alice", "bob", "secret \xE2\x9C\x93", 42, 0},
      PrivateMessage{name32, name32, long_text, INT64_MAX, 1001},
      Joined{"lobby", "bob", 2, 1234, 1000},
      Parted{"lobby", "bob", 3, 1235, PartReason::kLeft, 0},
      Parted{"lobby", "bob", 3, 1235, PartReason::kQuit, 0},
      Parted{"lobby", "bob", 3, 1235, PartReason::kLost, 0},
      Parted{"lobby", "bob", 3, 1235, PartReason::kEvicted, 0},
      NickChanged{"alice", "alicia", "lobby", 4, 99},
      NickChanged{"alice", "alicia", "", 0, 99},
      WhoReply{"lobby", {"alice", "bob", "carol"}, false},
      WhoReply{"lobby", {}, true},
      RoomsReply{{{"dev", 1}, {"lobby", 0xFFFFFFFF}}, true},
      RoomsReply{{}, false},
      Notice{"you are already in lobby"},
      Error{"nick_in_use", "nickname alice is already in use"},
      Disconnected{DisconnectReason::kShutdown},
      Disconnected{DisconnectReason::kServerGone},
      Disconnected{DisconnectReason::kEvicted},
      SyncAck{17},
      WhoisReply{"bob", 1002, {"lobby", "dev"}},
      WhoisReply{"bob", 0, {}},
  };
}

}  // namespace

BOOST_AUTO_TEST_SUITE(protocol)

BOOST_AUTO_TEST_CASE(every_message_type_round_trips) {
  std::set<std::size_t> types;
  for (const Message& m : samples()) {
    types.insert(m.index());
    const Frame f = encode(m);
    BOOST_TEST(f.size() <= kMaxFrameBytes);
    const DecodeResult r = decode_exact(f);
    BOOST_TEST_REQUIRE(r.message.has_value(), "type " << m.index() << ": " << r.error);
    BOOST_TEST(r.error.empty());
    BOOST_TEST((*r.message == m), "type " << m.index() << " changed in the round trip");
  }
  BOOST_TEST(types.size() == std::variant_size_v<Message>, "a message type has no sample");
}

BOOST_AUTO_TEST_CASE(largest_room_message_fits_in_a_frame) {
  RoomMessage m{std::string(kMaxNameBytes, 'r'),
                std::string(kMaxNameBytes, 'f'),
                std::string(kMaxTextBytes, 't'),
                1,
                1,
                true,
                true,
                std::numeric_limits<std::uint32_t>::max()};
  const Frame f = encode(m);
  BOOST_TEST(f.size() <= kMaxFrameBytes);
  const DecodeResult r = decode(f);
  BOOST_TEST_REQUIRE(r.message.has_value());
  BOOST_TEST(std::get<RoomMessage>(*r.message).text.size() == kMaxTextBytes);
  BOOST_TEST((*r.message == Message(m)));
}

BOOST_AUTO_TEST_CASE(flags_are_independent) {
  for (bool action : {false, true}) {
    for (bool history : {false, true}) {
      const auto r = decode(encode(RoomMessage{"r", "f", "t", 1, 1, action, history, 0}));
      BOOST_TEST_REQUIRE(r.message.has_value());
      BOOST_TEST(std::get<RoomMessage>(*r.message).action == action);
      BOOST_TEST(std::get<RoomMessage>(*r.message).history == history);
    }
  }
  for (bool more : {false, true}) {
    const auto w = decode(encode(WhoReply{"r", {"a"}, more}));
    BOOST_TEST_REQUIRE(w.message.has_value());
    BOOST_TEST(std::get<WhoReply>(*w.message).more == more);
    const auto rr = decode(encode(RoomsReply{{{"a", 1}}, more}));
    BOOST_TEST_REQUIRE(rr.message.has_value());
    BOOST_TEST(std::get<RoomsReply>(*rr.message).more == more);
  }
  const auto s = decode(encode(Say{"r", "t", true}));
  BOOST_TEST_REQUIRE(s.message.has_value());
  BOOST_TEST(std::get<Say>(*s.message).action);
}

BOOST_AUTO_TEST_CASE(client_and_server_messages_are_told_apart) {
  BOOST_TEST(is_client_message(Hello{}));
  BOOST_TEST(is_client_message(Sync{}));
  BOOST_TEST(is_client_message(WhoisRequest{}));
  BOOST_TEST(!is_client_message(WhoisReply{}));
  BOOST_TEST(is_client_message(Quit{}));
  BOOST_TEST(!is_client_message(Welcome{}));
  BOOST_TEST(!is_client_message(RoomMessage{}));
  BOOST_TEST(!is_client_message(SyncAck{}));
}

BOOST_AUTO_TEST_CASE(reason_names) {
  BOOST_TEST(to_string(PartReason::kLeft) == "left");
  BOOST_TEST(to_string(PartReason::kQuit) == "quit");
  BOOST_TEST(to_string(PartReason::kLost) == "lost");
  BOOST_TEST(to_string(PartReason::kEvicted) == "evicted");
  BOOST_TEST(to_string(DisconnectReason::kShutdown) == "shutdown");
  BOOST_TEST(to_string(DisconnectReason::kServerGone) == "server_gone");
  BOOST_TEST(to_string(DisconnectReason::kEvicted) == "evicted");
}

BOOST_AUTO_TEST_CASE(encoder_refuses_oversized_fields) {
  BOOST_CHECK_THROW(encode(Join{std::string(256, 'a')}), std::length_error);
  BOOST_CHECK_THROW(encode(Notice{std::string(65536, 'a')}), std::length_error);
  // Fits the str16 field but not the frame.
  BOOST_CHECK_THROW(encode(Notice{std::string(kMaxFrameBytes, 'a')}), std::length_error);
  BOOST_CHECK_NO_THROW(encode(Join{std::string(255, 'a')}));
}

// ---- chunking helpers ----

BOOST_AUTO_TEST_CASE(who_chunks_fit_and_cover_every_nick) {
  for (const std::size_t count : {0u, 1u, 100u, 1000u}) {
    const std::string room(kMaxNameBytes, 'R');
    std::vector<std::string> nicks;
    for (std::size_t i = 0; i < count; ++i) {
      std::string n = "nick" + std::to_string(i);
      n.resize(kMaxNameBytes - (i % 7), '_');
      nicks.push_back(n);
    }
    std::vector<std::string> seen;
    std::size_t from = 0, frames = 0;
    do {
      const std::size_t n = who_entries_that_fit(room, nicks, from);
      WhoReply reply{room, {nicks.begin() + from, nicks.begin() + from + n}, false};
      from += n;
      reply.more = from < nicks.size();
      const Frame f = encode(reply);
      BOOST_TEST(f.size() <= kMaxFrameBytes);
      if (reply.more) {
        BOOST_TEST_REQUIRE(n > 0u);
        // The chunk is as large as it can be: one more nick would not fit.
        WhoReply bigger = reply;
        bigger.nicks.push_back(nicks[from]);
        BOOST_CHECK_THROW(encode(bigger), std::length_error);
      }
      const auto r = decode(f);
      BOOST_TEST_REQUIRE(r.message.has_value());
      const auto& got = std::get<WhoReply>(*r.message);
      BOOST_TEST(got.more == reply.more);
      seen.insert(seen.end(), got.nicks.begin(), got.nicks.end());
      ++frames;
    } while (from < nicks.size());
    BOOST_TEST(seen == nicks);
    if (count == 1000) BOOST_TEST(frames > 1u);
  }
}

BOOST_AUTO_TEST_CASE(rooms_chunks_fit_and_cover_every_room) {
  for (const std::size_t count : {0u, 1u, 1000u}) {
    std::vector<RoomInfo> rooms;
    for (std::size_t i = 0; i < count; ++i) {
      std::string name = "room" + std::to_string(i);
      name.resize(kMaxNameBytes - (i % 5), '-');
      rooms.push_back({name, static_cast<std::uint32_t>(i * 1000003)});
    }
    std::vector<RoomInfo> seen;
    std::size_t from = 0, frames = 0;
    do {
      const std::size_t n = rooms_entries_that_fit(rooms, from);
      RoomsReply reply{{rooms.begin() + from, rooms.begin() + from + n}, false};
      from += n;
      reply.more = from < rooms.size();
      const Frame f = encode(reply);
      BOOST_TEST(f.size() <= kMaxFrameBytes);
      if (reply.more) {
        BOOST_TEST_REQUIRE(n > 0u);
        RoomsReply bigger = reply;
        bigger.rooms.push_back(rooms[from]);
        BOOST_CHECK_THROW(encode(bigger), std::length_error);
      }
      const auto r = decode(f);
      BOOST_TEST_REQUIRE(r.message.has_value());
      const auto& got = std::get<RoomsReply>(*r.message);
      BOOST_TEST(got.more == reply.more);
      seen.insert(seen.end(), got.rooms.begin(), got.rooms.end());
      ++frames;
    } while (from < rooms.size());
    BOOST_TEST(seen.size() == rooms.size());
    BOOST_TEST((seen == rooms));
    if (count == 1000) BOOST_TEST(frames > 1u);
  }
}

// ---- malformed frames ----

BOOST_AUTO_TEST_CASE(empty_and_short_frames) {
  rejected({});
  rejected(bytes({1}));
  rejected(bytes({1, 3, 0, 0, 0, 0, 0}));  // 7 bytes: one short of a header
}

BOOST_AUTO_TEST_CASE(wrong_version) {
  Frame f = encode(Join{"lobby"});
  for (int v : {0, kVersion - 1, kVersion + 1, 255}) {
    f[0] = std::byte{static_cast<std::uint8_t>(v)};
    BOOST_TEST(rejected(f).find("version") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(unknown_type) {
  for (int t : {0, 12, 63, 77, 128, 255}) {
    BOOST_TEST(rejected(raw(kVersion, t, 0, {})).find("type") != std::string::npos, "type " << t);
  }
}

BOOST_AUTO_TEST_CASE(payload_length_mismatch) {
  const Frame good = encode(Join{"lobby"});
  const long n = static_cast<long>(good.size() - kHeaderBytes);
  for (long len : {n + 1, n - 1, 0L, 0xFFFFFFFFL}) {
    Frame f = good;
    f[4] = std::byte{static_cast<std::uint8_t>(len)};
    f[5] = std::byte{static_cast<std::uint8_t>(len >> 8)};
    f[6] = std::byte{static_cast<std::uint8_t>(len >> 16)};
    f[7] = std::byte{static_cast<std::uint8_t>(len >> 24)};
    BOOST_TEST(rejected(f).find("length") != std::string::npos, "length " << len);
  }
}

BOOST_AUTO_TEST_CASE(truncated_fields) {
  constexpr int kJoin = 3, kNotice = 72, kSync = 10, kRoomMessage = 65, kWho = 70, kRooms = 71;
  // str8 claims 10 bytes, 3 present.
  BOOST_TEST(rejected(raw(kVersion, kJoin, 0, bytes({10, 'a', 'b', 'c'}))).find("room") !=
             std::string::npos);
  // str8 length byte itself missing.
  rejected(raw(kVersion, kJoin, 0, {}));
  // str16 claims 100 bytes, 5 present; and a str16 whose length is cut after one byte.
  rejected(raw(kVersion, kNotice, 0, bytes({100, 0, 'h', 'e', 'l', 'l', 'o'})));
  rejected(raw(kVersion, kNotice, 0, bytes({5})));
  // u64 with 7 of 8 bytes.
  BOOST_TEST(rejected(raw(kVersion, kSync, 0, bytes({1, 2, 3, 4, 5, 6, 7}))).find("token") !=
             std::string::npos);
  // RoomMessage missing its time.
  rejected(raw(kVersion, kRoomMessage, 0,
               str8("r") + str8("f") + bytes({1, 0, 't'}) + bytes({1, 0, 0, 0, 0, 0, 0, 0})));
  // Lists whose count promises more entries than present.
  rejected(raw(kVersion, kWho, 0, str8("r") + bytes({3, 0}) + str8("a") + str8("b")));
  rejected(raw(kVersion, kWho, 0, str8("r") + bytes({0xFF, 0xFF})));
  rejected(raw(kVersion, kRooms, 0, bytes({2, 0}) + str8("a") + bytes({1, 0, 0, 0}) + str8("b")));
  rejected(raw(kVersion, kRooms, 0, bytes({1, 0}) + str8("a") + bytes({1, 0, 0})));
}

BOOST_AUTO_TEST_CASE(trailing_bytes) {
  for (const Message& m : samples()) {
    Frame f = encode(m) + bytes({0});
    const std::uint32_t len = static_cast<std::uint32_t>(f.size() - kHeaderBytes);
    f[4] = std::byte{static_cast<std::uint8_t>(len)};
    f[5] = std::byte{static_cast<std::uint8_t>(len >> 8)};
    if (f.size() > kMaxFrameBytes) continue;  // the largest samples are near the limit
    BOOST_TEST(rejected(f).find("trailing") != std::string::npos, "type " << m.index());
  }
}

BOOST_AUTO_TEST_CASE(unknown_flags) {
  const auto with_flags = [](const Message& m, int flags) {
    Frame f = encode(m);
    f[2] = std::byte{static_cast<std::uint8_t>(flags)};
    f[3] = std::byte{static_cast<std::uint8_t>(flags >> 8)};
    return f;
  };
  BOOST_TEST(rejected(with_flags(Join{"a"}, 1)).find("flags") != std::string::npos);
  rejected(with_flags(Hello{"a", "b"}, 0x8000));
  rejected(with_flags(Say{"a", "b", false}, 2));  // history is not a Say flag
  rejected(with_flags(RoomMessage{"a", "b", "c", 1, 1, false, false, 0}, 4));
  rejected(with_flags(RoomMessage{"a", "b", "c", 1, 1, false, false, 0}, 0x100));
  rejected(with_flags(WhoReply{"a", {}, false}, 1));
  rejected(with_flags(RoomsReply{{}, false}, 2));
  rejected(with_flags(SyncAck{1}, 4));
}

BOOST_AUTO_TEST_CASE(bad_enum_values) {
  Frame parted = encode(Parted{"r", "n", 1, 1, PartReason::kEvicted, 0});
  for (int v : {4, 5, 255}) {
    parted[parted.size() - 5] = std::byte{static_cast<std::uint8_t>(v)};  // before the uid
    BOOST_TEST(rejected(parted).find("reason") != std::string::npos);
  }
  Frame disc = encode(Disconnected{DisconnectReason::kEvicted});
  for (int v : {3, 4, 255}) {
    disc.back() = std::byte{static_cast<std::uint8_t>(v)};
    BOOST_TEST(rejected(disc).find("reason") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(frame_larger_than_the_limit) {
  // A Notice whose header and fields agree, one byte over kMaxFrameBytes.
  const std::size_t text = kMaxFrameBytes + 1 - kHeaderBytes - 2;
  Frame payload = bytes({static_cast<int>(text & 0xFF), static_cast<int>(text >> 8)});
  payload.resize(payload.size() + text, std::byte{'a'});
  const Frame f = raw(kVersion, 72, 0, payload);
  BOOST_TEST_REQUIRE(f.size() == kMaxFrameBytes + 1);
  BOOST_TEST(rejected(f).find("larger") != std::string::npos);
  // One byte less is fine.
  Frame ok_payload =
      bytes({static_cast<int>((text - 1) & 0xFF), static_cast<int>((text - 1) >> 8)});
  ok_payload.resize(ok_payload.size() + text - 1, std::byte{'a'});
  BOOST_TEST(decode(raw(kVersion, 72, 0, ok_payload)).message.has_value());
}

// ---- brute force ----

BOOST_AUTO_TEST_CASE(every_strict_prefix_of_a_valid_frame_is_rejected) {
  std::size_t rejected_prefixes = 0, prefixes = 0;
  for (const Message& m : samples()) {
    const Frame f = encode(m);
    for (std::size_t n = 0; n < f.size(); ++n, ++prefixes) {
      const DecodeResult r = decode_exact(Frame(f.begin(), f.begin() + static_cast<long>(n)));
      if (!r.message && !r.error.empty()) ++rejected_prefixes;
    }
  }
  BOOST_TEST(rejected_prefixes == prefixes);
}

// Whatever decode accepts is canonical: encoding the result gives back the same bytes.
void check_decode_of_arbitrary(const Frame& f, std::size_t& accepted) {
  const DecodeResult r = decode_exact(f);
  if (r.message.has_value() == !r.error.empty()) {
    BOOST_ERROR("decode returned both or neither of message and error");
    return;
  }
  if (r.message) {
    ++accepted;
    if (encode(*r.message) != f) BOOST_ERROR("accepted a non-canonical frame");
  }
}

BOOST_AUTO_TEST_CASE(random_bytes_never_crash) {
  std::mt19937 rng(20240607);
  std::size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    Frame f(rng() % 80);
    for (auto& b : f) b = std::byte{static_cast<std::uint8_t>(rng())};
    if (i % 2 == 0 && f.size() >= kHeaderBytes) {
      // Plausible headers get past the first checks and into the field readers.
      static constexpr int kTypes[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 64,
                                       65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75};
      const auto len = static_cast<std::uint32_t>(f.size() - kHeaderBytes);
      f[0] = std::byte{kVersion};
      f[1] = std::byte{static_cast<std::uint8_t>(kTypes[rng() % std::size(kTypes)])};
      if (rng() % 4 != 0) f[2] = f[3] = std::byte{0};
      f[4] = std::byte{static_cast<std::uint8_t>(len)};
      f[5] = f[6] = f[7] = std::byte{0};
    }
    check_decode_of_arbitrary(f, accepted);
  }
  BOOST_TEST_MESSAGE("random frames accepted: " << accepted);
  BOOST_TEST(accepted > 0u);  // some plausible headers make it: the property was exercised
}

BOOST_AUTO_TEST_CASE(mutated_valid_frames_never_crash) {
  std::mt19937 rng(7);
  std::size_t accepted = 0;
  const auto all = samples();
  for (int i = 0; i < 20000; ++i) {
    Frame f = encode(all[rng() % all.size()]);
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      // Keep the header mostly intact so the payload readers see the damage.
      const std::size_t at = rng() % 8 == 0 ? rng() % f.size()
                             : f.size() > kHeaderBytes
                                 ? kHeaderBytes + rng() % (f.size() - kHeaderBytes)
                                 : rng() % f.size();
      f[at] = std::byte{static_cast<std::uint8_t>(rng())};
    }
    check_decode_of_arbitrary(f, accepted);
  }
  BOOST_TEST(accepted > 0u);  // many flips land in text and stay valid
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat::protocol

#include "common/protocol.hpp"

#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "common/limits.hpp"

namespace chat::protocol {
namespace {

// Message type numbers on the wire. Client messages < 64 <= server messages.
enum class Type : std::uint8_t {
  kHello = 1,
  kSay,
  kJoin,
  kPart,
  kPrivateSend,
  kNickChange,
  kWhoRequest,
  kRoomsRequest,
  kQuit,
  kSync,
  kWhoisRequest,
  kWelcome = 64,
  kRoomMessage,
  kPrivateMessage,
  kJoined,
  kParted,
  kNickChanged,
  kWhoReply,
  kRoomsReply,
  kNotice,
  kError,
  kDisconnected,
  kSyncAck,
  kWhoisReply,
};

constexpr std::uint16_t kFlagAction = 1;
constexpr std::uint16_t kFlagHistory = 2;
constexpr std::uint16_t kFlagMore = 4;

class Writer {
 public:
  Writer(Type type, std::uint16_t flags) {
    out_.resize(kHeaderBytes);
    out_[0] = std::byte{kVersion};
    out_[1] = std::byte{static_cast<std::uint8_t>(type)};
    put_le(2, flags, 2);
  }
  void str8(const std::string& s) {
    if (s.size() > 0xFF) throw std::length_error("protocol: name field longer than 255 bytes");
    u(s.size(), 1);
    bytes(s);
  }
  void str16(const std::string& s) {
    if (s.size() > 0xFFFF) throw std::length_error("protocol: text field longer than 65535");
    u(s.size(), 2);
    bytes(s);
  }
  void u(std::uint64_t v, int n) {
    const std::size_t at = out_.size();
    out_.resize(at + n);
    put_le(at, v, n);
  }
  void i64(std::int64_t v) { u(static_cast<std::uint64_t>(v), 8); }
  Frame finish() {
    put_le(4, out_.size() - kHeaderBytes, 4);
    if (out_.size() > kMaxFrameBytes) throw std::length_error("protocol: frame too large");
    return std::move(out_);
  }

 private:
  void bytes(const std::string& s) {
    const std::size_t at = out_.size();
    out_.resize(at + s.size());
    if (!s.empty()) std::memcpy(out_.data() + at, s.data(), s.size());
  }
  void put_le(std::size_t at, std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_[at + i] = std::byte{static_cast<std::uint8_t>(v >> (8 * i))};
  }
  Frame out_;
};

// Reads fields from a payload; the first failure sticks and every later read returns empty.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> p) : p_(p) {}
  std::string str8(const char* field) { return str(1, field); }
  std::string str16(const char* field) { return str(2, field); }
  std::uint64_t u(int n, const char* field) {
    if (!take(static_cast<std::size_t>(n), field)) return 0;
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i)
      v |= std::uint64_t(std::to_integer<std::uint8_t>(p_[pos_ - n + i])) << (8 * i);
    return v;
  }
  std::int64_t i64(const char* field) { return static_cast<std::int64_t>(u(8, field)); }
  bool ok() const { return error_.empty(); }
  // Call after the last field: anything left over is an error too.
  std::string finish() {
    if (ok() && pos_ != p_.size()) error_ = "trailing bytes after last field";
    return error_;
  }
  void fail(std::string why) {
    if (ok()) error_ = std::move(why);
  }

 private:
  bool take(std::size_t n, const char* field) {
    if (!ok()) return false;
    if (p_.size() - pos_ < n) {
      error_ = std::string("truncated field '") + field + "'";
      return false;
    }
    pos_ += n;
    return true;
  }
  std::string str(int len_bytes, const char* field) {
    const std::size_t n = u(len_bytes, field);
    if (!take(n, field)) return {};
    return std::string(reinterpret_cast<const char*>(p_.data() + pos_ - n), n);
  }
  std::span<const std::byte> p_;
  std::size_t pos_ = 0;
  std::string error_;
};

std::uint16_t flag(bool b, std::uint16_t f) {
  return b ? f : 0;
}

}  // namespace

std::string_view to_string(PartReason r) {
  switch (r) {
    case PartReason::kLeft:
      return "left";
    case PartReason::kQuit:
      return "quit";
    case PartReason::kLost:
      return "lost";
    case PartReason::kEvicted:
      return "evicted";
  }
  return "left";
}

std::string_view to_string(DisconnectReason r) {
  switch (r) {
    case DisconnectReason::kShutdown:
      return "shutdown";
    case DisconnectReason::kServerGone:
      return "server_gone";
    case DisconnectReason::kEvicted:
      return "evicted";
  }
  return "shutdown";
}

bool is_client_message(const Message& m) {
  return m.index() <= 10;  // up to WhoisRequest
}

Frame encode(const Message& m) {
  return std::visit(
      [](const auto& v) -> Frame {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Hello>) {
          Writer w(Type::kHello, 0);
          w.str8(v.nick), w.str8(v.room);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Say>) {
          Writer w(Type::kSay, flag(v.action, kFlagAction));
          w.str8(v.room), w.str16(v.text);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Join>) {
          Writer w(Type::kJoin, 0);
          w.str8(v.room);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Part>) {
          Writer w(Type::kPart, 0);
          w.str8(v.room);
          return w.finish();
        } else if constexpr (std::is_same_v<T, PrivateSend>) {
          Writer w(Type::kPrivateSend, 0);
          w.str8(v.to), w.str16(v.text);
          return w.finish();
        } else if constexpr (std::is_same_v<T, NickChange>) {
          Writer w(Type::kNickChange, 0);
          w.str8(v.nick);
          return w.finish();
        } else if constexpr (std::is_same_v<T, WhoRequest>) {
          Writer w(Type::kWhoRequest, 0);
          w.str8(v.room);
          return w.finish();
        } else if constexpr (std::is_same_v<T, RoomsRequest>) {
          return Writer(Type::kRoomsRequest, 0).finish();
        } else if constexpr (std::is_same_v<T, Quit>) {
          Writer w(Type::kQuit, 0);
          w.str16(v.reason);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Sync>) {
          Writer w(Type::kSync, 0);
          w.u(v.token, 8);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Welcome>) {
          Writer w(Type::kWelcome, 0);
          w.str8(v.nick), w.str8(v.room);
          return w.finish();
        } else if constexpr (std::is_same_v<T, RoomMessage>) {
          Writer w(Type::kRoomMessage, flag(v.action, kFlagAction) | flag(v.history, kFlagHistory));
          w.str8(v.room), w.str8(v.from), w.str16(v.text), w.u(v.seq, 8), w.i64(v.time_ms);
          w.u(v.uid, 4);
          return w.finish();
        } else if constexpr (std::is_same_v<T, PrivateMessage>) {
          Writer w(Type::kPrivateMessage, 0);
          w.str8(v.from), w.str8(v.to), w.str16(v.text), w.i64(v.time_ms), w.u(v.uid, 4);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Joined>) {
          Writer w(Type::kJoined, 0);
          w.str8(v.room), w.str8(v.nick), w.u(v.seq, 8), w.i64(v.time_ms), w.u(v.uid, 4);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Parted>) {
          Writer w(Type::kParted, 0);
          w.str8(v.room), w.str8(v.nick), w.u(v.seq, 8), w.i64(v.time_ms);
          w.u(static_cast<std::uint8_t>(v.reason), 1), w.u(v.uid, 4);
          return w.finish();
        } else if constexpr (std::is_same_v<T, NickChanged>) {
          Writer w(Type::kNickChanged, 0);
          w.str8(v.old_nick), w.str8(v.new_nick), w.str8(v.room), w.u(v.seq, 8), w.i64(v.time_ms);
          return w.finish();
        } else if constexpr (std::is_same_v<T, WhoReply>) {
          Writer w(Type::kWhoReply, flag(v.more, kFlagMore));
          w.str8(v.room), w.u(v.nicks.size(), 2);
          for (const auto& n : v.nicks) w.str8(n);
          return w.finish();
        } else if constexpr (std::is_same_v<T, RoomsReply>) {
          Writer w(Type::kRoomsReply, flag(v.more, kFlagMore));
          w.u(v.rooms.size(), 2);
          for (const auto& r : v.rooms) w.str8(r.name), w.u(r.members, 4);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Notice>) {
          Writer w(Type::kNotice, 0);
          w.str16(v.text);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Error>) {
          Writer w(Type::kError, 0);
          w.str8(v.code), w.str16(v.text);
          return w.finish();
        } else if constexpr (std::is_same_v<T, Disconnected>) {
          Writer w(Type::kDisconnected, 0);
          w.u(static_cast<std::uint8_t>(v.reason), 1);
          return w.finish();
        } else if constexpr (std::is_same_v<T, SyncAck>) {
          Writer w(Type::kSyncAck, 0);
          w.u(v.token, 8);
          return w.finish();
        } else if constexpr (std::is_same_v<T, WhoisRequest>) {
          Writer w(Type::kWhoisRequest, 0);
          w.str8(v.nick);
          return w.finish();
        } else {
          static_assert(std::is_same_v<T, WhoisReply>);
          if (v.rooms.size() > kMaxWhoisRooms) throw std::length_error("whois: too many rooms");
          Writer w(Type::kWhoisReply, 0);
          w.str8(v.nick), w.u(v.uid, 4), w.u(v.rooms.size(), 2);
          for (const auto& r : v.rooms) w.str8(r);
          return w.finish();
        }
      },
      m);
}

std::size_t who_entries_that_fit(const std::string& room, const std::vector<std::string>& nicks,
                                 std::size_t from) {
  std::size_t used = kHeaderBytes + 1 + room.size() + 2, n = 0;
  while (from + n < nicks.size() && used + 1 + nicks[from + n].size() <= kMaxFrameBytes) {
    used += 1 + nicks[from + n].size();
    ++n;
  }
  return n;
}

std::size_t rooms_entries_that_fit(const std::vector<RoomInfo>& rooms, std::size_t from) {
  std::size_t used = kHeaderBytes + 2, n = 0;
  while (from + n < rooms.size() && used + 5 + rooms[from + n].name.size() <= kMaxFrameBytes) {
    used += 5 + rooms[from + n].name.size();
    ++n;
  }
  return n;
}

DecodeResult decode(std::span<const std::byte> frame) {
  DecodeResult res;
  if (frame.size() < kHeaderBytes) {
    res.error = "frame shorter than its header";
    return res;
  }
  if (frame.size() > kMaxFrameBytes) {
    res.error = "frame larger than " + std::to_string(kMaxFrameBytes) + " bytes";
    return res;
  }
  const auto byte = [&](std::size_t i) { return std::to_integer<std::uint32_t>(frame[i]); };
  if (byte(0) != kVersion) {
    res.error = "unsupported protocol version " + std::to_string(byte(0));
    return res;
  }
  const auto type = static_cast<Type>(byte(1));
  const std::uint16_t flags = static_cast<std::uint16_t>(byte(2) | byte(3) << 8);
  const std::uint32_t length = byte(4) | byte(5) << 8 | byte(6) << 16 | byte(7) << 24;
  if (length != frame.size() - kHeaderBytes) {
    res.error = "payload length " + std::to_string(length) + " does not match frame size";
    return res;
  }
  Reader r(frame.subspan(kHeaderBytes));
  std::uint16_t allowed_flags = 0;
  Message m;
  switch (type) {
    case Type::kHello: {
      Hello v;
      v.nick = r.str8("nick"), v.room = r.str8("room");
      m = std::move(v);
      break;
    }
    case Type::kSay: {
      Say v;
      v.room = r.str8("room"), v.text = r.str16("text"), v.action = flags & kFlagAction;
      allowed_flags = kFlagAction;
      m = std::move(v);
      break;
    }
    case Type::kJoin:
      m = Join{r.str8("room")};
      break;
    case Type::kPart:
      m = Part{r.str8("room")};
      break;
    case Type::kPrivateSend: {
      PrivateSend v;
      v.to = r.str8("to"), v.text = r.str16("text");
      m = std::move(v);
      break;
    }
    case Type::kNickChange:
      m = NickChange{r.str8("nick")};
      break;
    case Type::kWhoRequest:
      m = WhoRequest{r.str8("room")};
      break;
    case Type::kRoomsRequest:
      m = RoomsRequest{};
      break;
    case Type::kQuit:
      m = Quit{r.str16("reason")};
      break;
    case Type::kSync:
      m = Sync{r.u(8, "token")};
      break;
    case Type::kWelcome: {
      Welcome v;
      v.nick = r.str8("nick"), v.room = r.str8("room");
      m = std::move(v);
      break;
    }
    case Type::kRoomMessage: {
      RoomMessage v;
      v.room = r.str8("room"), v.from = r.str8("from"), v.text = r.str16("text");
      v.seq = r.u(8, "seq"), v.time_ms = r.i64("time"),
      v.uid = static_cast<std::uint32_t>(r.u(4, "uid"));
      v.action = flags & kFlagAction, v.history = flags & kFlagHistory;
      allowed_flags = kFlagAction | kFlagHistory;
      m = std::move(v);
      break;
    }
    case Type::kPrivateMessage: {
      PrivateMessage v;
      v.from = r.str8("from"), v.to = r.str8("to"), v.text = r.str16("text");
      v.time_ms = r.i64("time"), v.uid = static_cast<std::uint32_t>(r.u(4, "uid"));
      m = std::move(v);
      break;
    }
    case Type::kJoined: {
      Joined v;
      v.room = r.str8("room"), v.nick = r.str8("nick"), v.seq = r.u(8, "seq");
      v.time_ms = r.i64("time"), v.uid = static_cast<std::uint32_t>(r.u(4, "uid"));
      m = std::move(v);
      break;
    }
    case Type::kParted: {
      Parted v;
      v.room = r.str8("room"), v.nick = r.str8("nick"), v.seq = r.u(8, "seq");
      v.time_ms = r.i64("time");
      const auto reason = r.u(1, "reason");
      if (reason > static_cast<std::uint8_t>(PartReason::kEvicted)) r.fail("bad part reason");
      v.reason = static_cast<PartReason>(reason);
      v.uid = static_cast<std::uint32_t>(r.u(4, "uid"));
      m = std::move(v);
      break;
    }
    case Type::kNickChanged: {
      NickChanged v;
      v.old_nick = r.str8("old"), v.new_nick = r.str8("new"), v.room = r.str8("room");
      v.seq = r.u(8, "seq"), v.time_ms = r.i64("time");
      m = std::move(v);
      break;
    }
    case Type::kWhoReply: {
      WhoReply v;
      v.room = r.str8("room");
      const auto n = r.u(2, "count");
      for (std::uint64_t i = 0; i < n && r.ok(); ++i) v.nicks.push_back(r.str8("nick"));
      v.more = flags & kFlagMore;
      allowed_flags = kFlagMore;
      m = std::move(v);
      break;
    }
    case Type::kRoomsReply: {
      RoomsReply v;
      const auto n = r.u(2, "count");
      for (std::uint64_t i = 0; i < n && r.ok(); ++i) {
        RoomInfo info;
        info.name = r.str8("name");
        info.members = static_cast<std::uint32_t>(r.u(4, "members"));
        v.rooms.push_back(std::move(info));
      }
      v.more = flags & kFlagMore;
      allowed_flags = kFlagMore;
      m = std::move(v);
      break;
    }
    case Type::kNotice:
      m = Notice{r.str16("text")};
      break;
    case Type::kError: {
      Error v;
      v.code = r.str8("code"), v.text = r.str16("text");
      m = std::move(v);
      break;
    }
    case Type::kDisconnected: {
      const auto reason = r.u(1, "reason");
      if (reason > static_cast<std::uint8_t>(DisconnectReason::kEvicted)) {
        r.fail("bad disconnect reason");
      }
      m = Disconnected{static_cast<DisconnectReason>(reason)};
      break;
    }
    case Type::kSyncAck:
      m = SyncAck{r.u(8, "token")};
      break;
    case Type::kWhoisRequest:
      m = WhoisRequest{r.str8("nick")};
      break;
    case Type::kWhoisReply: {
      WhoisReply v;
      v.nick = r.str8("nick"), v.uid = static_cast<std::uint32_t>(r.u(4, "uid"));
      const auto n = r.u(2, "count");
      if (n > kMaxWhoisRooms) r.fail("too many rooms");
      for (std::uint64_t i = 0; i < n && r.ok(); ++i) v.rooms.push_back(r.str8("room"));
      m = std::move(v);
      break;
    }
    default:
      res.error = "unknown message type " + std::to_string(byte(1));
      return res;
  }
  if (flags & ~allowed_flags) r.fail("unknown flags " + std::to_string(flags));
  res.error = r.finish();
  if (res.error.empty()) res.message = std::move(m);
  return res;
}

}  // namespace chat::protocol

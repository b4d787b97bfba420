#include "common/protocol.hpp"

#include <cstring>
#include <limits>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>

#include "common/limits.hpp"

namespace chat::protocol {
namespace {

// Message type numbers on the wire: client messages < kFirstServerType <= server messages.
constexpr std::uint8_t kFirstServerType = 64;

constexpr std::uint16_t kFlagAction = 1;
constexpr std::uint16_t kFlagHistory = 2;
constexpr std::uint16_t kFlagMore = 4;

class Writer {
 public:
  explicit Writer(std::uint8_t type) {
    out_.resize(kHeaderBytes);
    out_[0] = std::byte{kVersion};
    out_[1] = std::byte{type};
  }
  void set_flag(std::uint16_t bit) { put_le(2, flags_ |= bit, 2); }
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
  void u(std::uint64_t v, std::size_t n) {
    const std::size_t at = out_.size();
    out_.resize(at + n);
    put_le(at, v, n);
  }
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
  void put_le(std::size_t at, std::uint64_t v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      out_[at + i] = std::byte{static_cast<std::uint8_t>(v >> (8 * i))};
    }
  }
  Frame out_;
  std::uint16_t flags_ = 0;
};

// Reads fields from a payload; the first failure sticks and every later read returns empty.
class Reader {
 public:
  Reader(std::span<const std::byte> p, std::uint16_t flags) : p_(p), flags_(flags) {}
  bool has_flag(std::uint16_t bit) const { return (flags_ & bit) != 0; }
  std::uint16_t flags() const { return flags_; }
  std::string str8(const char* field) { return str(1, field); }
  std::string str16(const char* field) { return str(2, field); }
  std::uint64_t u(std::size_t n, const char* field) {
    if (!take(n, field)) return 0;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i)
      v |= std::uint64_t(std::to_integer<std::uint8_t>(p_[pos_ - n + i])) << (8 * i);
    return v;
  }
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
  std::string str(std::size_t len_bytes, const char* field) {
    const std::size_t n = u(len_bytes, field);
    if (!take(n, field)) return {};
    return std::string(reinterpret_cast<const char*>(p_.data() + pos_ - n), n);
  }
  std::span<const std::byte> p_;
  std::uint16_t flags_;
  std::size_t pos_ = 0;
  std::string error_;
};

// ---- Codecs: how one value is written (put) and read back (get, naming it in errors) ----

struct Str8 {
  void put(Writer& w, const std::string& s) const { w.str8(s); }
  void get(Reader& r, const char* name, std::string& s) const { s = r.str8(name); }
};
struct Str16 {
  void put(Writer& w, const std::string& s) const { w.str16(s); }
  void get(Reader& r, const char* name, std::string& s) const { s = r.str16(name); }
};
template <class T>  // sizeof(T) bytes, little-endian; signed values as two's complement
struct Int {
  void put(Writer& w, T v) const { w.u(static_cast<std::uint64_t>(v), sizeof(T)); }
  void get(Reader& r, const char* name, T& v) const { v = static_cast<T>(r.u(sizeof(T), name)); }
};
// One byte holding an enum value from 0 to `last`; a larger one fails decoding with `error`.
template <class E>
struct Enum8 {
  E last;
  const char* error;
  void put(Writer& w, E v) const { w.u(static_cast<std::uint8_t>(v), 1); }
  void get(Reader& r, const char* name, E& v) const {
    const auto n = r.u(1, name);
    if (n > static_cast<std::uint8_t>(last)) r.fail(error);
    v = static_cast<E>(n);
  }
};
// A u16 "count", then that many elements (at most `max`; more fail with `too_many`). Errors
// name each element by the list field's name; a record's elements name their own fields.
template <class Elem>
struct List {
  Elem elem;
  std::size_t max = std::numeric_limits<std::size_t>::max();
  const char* too_many = "";
  template <class T>
  void put(Writer& w, const std::vector<T>& v) const {
    if (v.size() > max) throw std::length_error(std::string("protocol: ") + too_many);
    w.u(v.size(), 2);
    for (const T& e : v) elem.put(w, e);
  }
  template <class T>
  void get(Reader& r, const char* name, std::vector<T>& v) const {
    const auto n = r.u(2, "count");
    if (n > max) r.fail(too_many);
    for (std::uint64_t i = 0; i < n && r.ok(); ++i) elem.get(r, name, v.emplace_back());
  }
};

// ---- Fields: a struct member, its name in errors and its codec; or a bool in a header flag ----

template <class M, class T, class Codec>
struct Field {
  const char* name;
  T M::*member;
  Codec codec;
  void put(Writer& w, const M& m) const { codec.put(w, m.*member); }
  void get(Reader& r, M& m) const { codec.get(r, name, m.*member); }
  constexpr std::uint16_t flag_bit() const { return 0; }
};
template <class M>
struct Flag {
  std::uint16_t bit;
  bool M::*member;
  void put(Writer& w, const M& m) const {
    if (m.*member) w.set_flag(bit);
  }
  void get(Reader& r, M& m) const { m.*member = r.has_flag(bit); }
  constexpr std::uint16_t flag_bit() const { return bit; }
};

// Fields in wire order; also the codec of a struct nested in a list.
template <class... F>
struct Record {
  std::tuple<F...> fields;
  template <class M>
  void put(Writer& w, const M& m) const {
    std::apply([&](const auto&... f) { (f.put(w, m), ...); }, fields);
  }
  template <class M>
  void get(Reader& r, const char* /*name*/, M& m) const {
    std::apply([&](const auto&... f) { (f.get(r, m), ...); }, fields);
  }
  constexpr std::uint16_t flags() const {
    return std::apply([](const auto&... f) { return (std::uint16_t{0} | ... | f.flag_bit()); },
                      fields);
  }
};

// A message: its type number and its fields. The flags it allows are its Flag fields'.
template <class... F>
struct Layout {
  std::uint8_t type;
  Record<F...> body;
};

constexpr Str8 str8;
constexpr Str16 str16;
constexpr Int<std::uint32_t> u32;
constexpr Int<std::uint64_t> u64;
constexpr Int<std::int64_t> i64;
template <class E>
constexpr Enum8<E> enum8(E last, const char* error) {
  return {last, error};
}
template <class Elem>
constexpr List<Elem> list(Elem elem) {
  return {elem};
}
template <class Elem>
constexpr List<Elem> list(Elem elem, std::size_t max, const char* too_many) {
  return {elem, max, too_many};
}
template <class M, class T, class Codec>
constexpr Field<M, T, Codec> field(const char* name, T M::*member, Codec codec) {
  return {name, member, codec};
}
template <class M>
constexpr Flag<M> flag(std::uint16_t bit, bool M::*member) {
  return {bit, member};
}
template <class... F>
constexpr Record<F...> record(F... fields) {
  return {{fields...}};
}
template <class... F>
constexpr Layout<F...> message(std::uint8_t type, F... fields) {
  return {type, {{fields...}}};
}

// ---- Every message's layout, written once for encode and decode ----

template <class M>
constexpr auto kLayout = nullptr;  // specialized for each Message alternative below

// client -> server
template <>
constexpr auto kLayout<Hello> = message(1, field("nick", &Hello::nick, str8),
                                        field("room", &Hello::room, str8));
template <>
constexpr auto kLayout<Say> = message(2, field("room", &Say::room, str8),
                                      field("text", &Say::text, str16),
                                      flag(kFlagAction, &Say::action));
template <>
constexpr auto kLayout<Join> = message(3, field("room", &Join::room, str8));
template <>
constexpr auto kLayout<Part> = message(4, field("room", &Part::room, str8));
template <>
constexpr auto kLayout<PrivateSend> = message(5, field("to", &PrivateSend::to, str8),
                                              field("text", &PrivateSend::text, str16));
template <>
constexpr auto kLayout<NickChange> = message(6, field("nick", &NickChange::nick, str8));
template <>
constexpr auto kLayout<WhoRequest> = message(7, field("room", &WhoRequest::room, str8));
template <>
constexpr auto kLayout<RoomsRequest> = message(8);
template <>
constexpr auto kLayout<Quit> = message(9, field("reason", &Quit::reason, str16));
template <>
constexpr auto kLayout<Sync> = message(10, field("token", &Sync::token, u64));
template <>
constexpr auto kLayout<WhoisRequest> = message(11, field("nick", &WhoisRequest::nick, str8));

// server -> client
template <>
constexpr auto kLayout<Welcome> = message(64, field("nick", &Welcome::nick, str8),
                                          field("room", &Welcome::room, str8));
template <>
constexpr auto kLayout<RoomMessage> =
    message(65, field("room", &RoomMessage::room, str8), field("from", &RoomMessage::from, str8),
            field("text", &RoomMessage::text, str16), field("seq", &RoomMessage::seq, u64),
            field("time", &RoomMessage::time_ms, i64), field("uid", &RoomMessage::uid, u32),
            flag(kFlagAction, &RoomMessage::action), flag(kFlagHistory, &RoomMessage::history));
template <>
constexpr auto kLayout<PrivateMessage> = message(66, field("from", &PrivateMessage::from, str8),
                                                 field("to", &PrivateMessage::to, str8),
                                                 field("text", &PrivateMessage::text, str16),
                                                 field("time", &PrivateMessage::time_ms, i64),
                                                 field("uid", &PrivateMessage::uid, u32));
template <>
constexpr auto kLayout<Joined> = message(67, field("room", &Joined::room, str8),
                                         field("nick", &Joined::nick, str8),
                                         field("seq", &Joined::seq, u64),
                                         field("time", &Joined::time_ms, i64),
                                         field("uid", &Joined::uid, u32));
template <>
constexpr auto kLayout<Parted> =
    message(68, field("room", &Parted::room, str8), field("nick", &Parted::nick, str8),
            field("seq", &Parted::seq, u64), field("time", &Parted::time_ms, i64),
            field("reason", &Parted::reason, enum8(PartReason::kEvicted, "bad part reason")),
            field("uid", &Parted::uid, u32));
template <>
constexpr auto kLayout<NickChanged> = message(69, field("old", &NickChanged::old_nick, str8),
                                              field("new", &NickChanged::new_nick, str8),
                                              field("room", &NickChanged::room, str8),
                                              field("seq", &NickChanged::seq, u64),
                                              field("time", &NickChanged::time_ms, i64));
template <>
constexpr auto kLayout<WhoReply> = message(70, field("room", &WhoReply::room, str8),
                                           field("nick", &WhoReply::nicks, list(str8)),
                                           flag(kFlagMore, &WhoReply::more));
constexpr auto kRoomInfo =
    record(field("name", &RoomInfo::name, str8), field("members", &RoomInfo::members, u32));
template <>
constexpr auto kLayout<RoomsReply> = message(71, field("room", &RoomsReply::rooms, list(kRoomInfo)),
                                             flag(kFlagMore, &RoomsReply::more));
template <>
constexpr auto kLayout<Notice> = message(72, field("text", &Notice::text, str16));
template <>
constexpr auto kLayout<Error> = message(73, field("code", &Error::code, str8),
                                        field("text", &Error::text, str16));
template <>
constexpr auto kLayout<Disconnected> = message(74, field("reason", &Disconnected::reason,
                                                         enum8(DisconnectReason::kEvicted,
                                                               "bad disconnect reason")));
template <>
constexpr auto kLayout<SyncAck> = message(75, field("token", &SyncAck::token, u64));
template <>
constexpr auto kLayout<WhoisReply> = message(76, field("nick", &WhoisReply::nick, str8),
                                             field("uid", &WhoisReply::uid, u32),
                                             field("room", &WhoisReply::rooms,
                                                   list(str8, kMaxWhoisRooms, "too many rooms")));

template <class M>
constexpr const auto& layout_of(const M&) {
  return kLayout<M>;
}

template <std::size_t... I>
constexpr bool type_numbers_unique(std::index_sequence<I...>) {
  const std::uint8_t types[] = {kLayout<std::variant_alternative_t<I, Message>>.type...};
  for (std::size_t i = 0; i < sizeof...(I); ++i) {
    for (std::size_t j = i + 1; j < sizeof...(I); ++j) {
      if (types[i] == types[j]) return false;
    }
  }
  return true;
}
static_assert(type_numbers_unique(std::make_index_sequence<std::variant_size_v<Message>>{}));

// If `type` is M's type number: reads the payload into `m` as an M and returns true.
template <class M>
bool read_as(std::uint8_t type, Reader& r, Message& m) {
  constexpr const auto& layout = kLayout<M>;
  if (type != layout.type) return false;
  layout.body.get(r, "", m.emplace<M>());
  if (r.flags() & ~layout.body.flags()) r.fail("unknown flags " + std::to_string(r.flags()));
  return true;
}

template <std::size_t... I>
bool read_any(std::uint8_t type, Reader& r, Message& m, std::index_sequence<I...>) {
  return (read_as<std::variant_alternative_t<I, Message>>(type, r, m) || ...);
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
  return std::visit([](const auto& v) { return layout_of(v).type < kFirstServerType; }, m);
}

Frame encode(const Message& m) {
  return std::visit(
      [](const auto& v) {
        const auto& layout = layout_of(v);
        Writer w(layout.type);
        layout.body.put(w, v);
        return w.finish();
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
  const std::uint16_t flags = static_cast<std::uint16_t>(byte(2) | byte(3) << 8);
  const std::uint32_t length = byte(4) | byte(5) << 8 | byte(6) << 16 | byte(7) << 24;
  if (length != frame.size() - kHeaderBytes) {
    res.error = "payload length " + std::to_string(length) + " does not match frame size";
    return res;
  }
  Reader r(frame.subspan(kHeaderBytes), flags);
  Message m;
  if (!read_any(static_cast<std::uint8_t>(byte(1)), r, m,
                std::make_index_sequence<std::variant_size_v<Message>>{})) {
    res.error = "unknown message type " + std::to_string(byte(1));
    return res;
  }
  res.error = r.finish();
  if (res.error.empty()) res.message = std::move(m);
  return res;
}

}  // namespace chat::protocol

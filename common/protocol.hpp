// The ipchat wire protocol: the messages client and server exchange, and their frame codec.
//
// A frame is an 8-byte header followed by a payload:
//   u8 version | u8 type | u16 flags (LE) | u32 payload length (LE)
// Payload fields, per message type, are str8 (u8 length + bytes), str16 (u16 LE length +
// bytes), u64 (LE) and i64 (LE). Decoding checks every length against the bytes actually
// present and never reads out of bounds; a frame that is not exactly one well-formed message
// is rejected with a reason. Every message the encoder accepts fits in kMaxFrameBytes.
// Each message's type number, fields and flags are described once, in protocol.cpp (kLayout).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace chat::protocol {

inline constexpr std::uint8_t kVersion = 2;
inline constexpr std::size_t kHeaderBytes = 8;

enum class PartReason : std::uint8_t { kLeft = 0, kQuit = 1, kLost = 2, kEvicted = 3 };
enum class DisconnectReason : std::uint8_t { kShutdown = 0, kServerGone = 1, kEvicted = 2 };

std::string_view to_string(PartReason r);
std::string_view to_string(DisconnectReason r);

// ---- client -> server ----
struct Hello {
  std::string nick;
  std::string room;
  bool operator==(const Hello&) const = default;
};
struct Say {  // a message (or /me action) to `room`, which the sender must be in
  std::string room;
  std::string text;
  bool action = false;
  bool operator==(const Say&) const = default;
};
struct Join {
  std::string room;
  bool operator==(const Join&) const = default;
};
struct Part {
  std::string room;
  bool operator==(const Part&) const = default;
};
struct PrivateSend {
  std::string to;
  std::string text;
  bool operator==(const PrivateSend&) const = default;
};
struct NickChange {
  std::string nick;
  bool operator==(const NickChange&) const = default;
};
struct WhoRequest {
  std::string room;
  bool operator==(const WhoRequest&) const = default;
};
struct RoomsRequest {
  bool operator==(const RoomsRequest&) const = default;
};
struct Quit {
  std::string reason;
  bool operator==(const Quit&) const = default;
};
// Who is NICK: answered with WhoisReply, or Error no_such_nick.
struct WhoisRequest {
  std::string nick;
  bool operator==(const WhoisRequest&) const = default;
};
// Answered with SyncAck once everything the client sent before it has been handled.
struct Sync {
  std::uint64_t token = 0;
  bool operator==(const Sync&) const = default;
};

// ---- server -> client ----
struct Welcome {
  std::string nick;
  std::string room;
  bool operator==(const Welcome&) const = default;
};
struct RoomMessage {
  std::string room;
  std::string from;
  std::string text;
  std::uint64_t seq = 0;
  std::int64_t time_ms = 0;  // Unix epoch milliseconds
  bool action = false;
  bool history = false;
  // The sender's Unix account, as the kernel told the server (a uid: one host, one passwd
  // database; the client shows its login name). 4 bytes keep the largest message in a frame.
  std::uint32_t uid = 0;
  bool operator==(const RoomMessage&) const = default;
};
struct PrivateMessage {
  std::string from;
  std::string to;
  std::string text;
  std::int64_t time_ms = 0;
  // The sender's Unix account, as the kernel told the server (a uid: one host, one passwd
  // database; the client shows its login name). 4 bytes keep the largest message in a frame.
  std::uint32_t uid = 0;
  bool operator==(const PrivateMessage&) const = default;
};
struct Joined {
  std::string room;
  std::string nick;
  std::uint64_t seq = 0;
  std::int64_t time_ms = 0;
  // The sender's Unix account, as the kernel told the server (a uid: one host, one passwd
  // database; the client shows its login name). 4 bytes keep the largest message in a frame.
  std::uint32_t uid = 0;
  bool operator==(const Joined&) const = default;
};
struct Parted {
  std::string room;
  std::string nick;
  std::uint64_t seq = 0;
  std::int64_t time_ms = 0;
  PartReason reason = PartReason::kLeft;
  // The sender's Unix account, as the kernel told the server (a uid: one host, one passwd
  // database; the client shows its login name). 4 bytes keep the largest message in a frame.
  std::uint32_t uid = 0;
  bool operator==(const Parted&) const = default;
};
struct NickChanged {  // sent once per room the user is in (and once with empty room to them)
  std::string old_nick;
  std::string new_nick;
  std::string room;
  std::uint64_t seq = 0;
  std::int64_t time_ms = 0;
  bool operator==(const NickChanged&) const = default;
};
struct WhoReply {  // long lists arrive in several frames; all but the last have `more`
  std::string room;
  std::vector<std::string> nicks;
  bool more = false;
  bool operator==(const WhoReply&) const = default;
};
struct RoomInfo {
  std::string name;
  std::uint32_t members = 0;
  bool operator==(const RoomInfo&) const = default;
};
struct RoomsReply {
  std::vector<RoomInfo> rooms;
  bool more = false;
  bool operator==(const RoomsReply&) const = default;
};
struct Notice {
  std::string text;
  bool operator==(const Notice&) const = default;
};
struct Error {
  std::string code;  // e.g. "nick_in_use"; see DESIGN.md
  std::string text;
  bool operator==(const Error&) const = default;
};
struct Disconnected {
  DisconnectReason reason = DisconnectReason::kShutdown;
  bool operator==(const Disconnected&) const = default;
};
struct SyncAck {
  std::uint64_t token = 0;
  bool operator==(const SyncAck&) const = default;
};
struct WhoisReply {
  std::string nick;
  std::uint32_t uid = 0;           // its Unix account, as the kernel told the server
  std::vector<std::string> rooms;  // at most kMaxWhoisRooms of them, by name
  bool operator==(const WhoisReply&) const = default;
};
// Rooms a WhoisReply lists (a frame holds about 120 names of 32 bytes).
inline constexpr std::size_t kMaxWhoisRooms = 100;

using Message = std::variant<Hello, Say, Join, Part, PrivateSend, NickChange, WhoRequest,
                             RoomsRequest, Quit, Sync, WhoisRequest, Welcome, RoomMessage,
                             PrivateMessage, Joined, Parted, NickChanged, WhoReply, RoomsReply,
                             Notice, Error, Disconnected, SyncAck, WhoisReply>;

// True for the messages a client may send to the server.
bool is_client_message(const Message& m);

using Frame = std::vector<std::byte>;

// Encodes `m` as one frame. Strings longer than their field allows (names > 255, text >
// 65535 bytes) are a programming error and throw std::length_error; callers validate first.
// WhoReply/RoomsReply must be split by the caller with the helpers below.
Frame encode(const Message& m);

// How many of `nicks` (starting at `from`) fit in one WhoReply frame for `room`.
std::size_t who_entries_that_fit(const std::string& room, const std::vector<std::string>& nicks,
                                 std::size_t from);
std::size_t rooms_entries_that_fit(const std::vector<RoomInfo>& rooms, std::size_t from);

struct DecodeResult {
  std::optional<Message> message;  // set on success
  std::string error;               // why the frame was rejected, otherwise
};

// Decodes exactly one message from `frame`. Never reads outside `frame`.
DecodeResult decode(std::span<const std::byte> frame);

}  // namespace chat::protocol

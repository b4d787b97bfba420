// How `chat` shows server events: JSON lines (--jsonl) or text for people.
#pragma once

#include <optional>
#include <string>

#include "common/protocol.hpp"

namespace chat::client {

struct RenderContext {
  std::string transport;  // for the welcome event
  std::string instance;
  bool color = false;  // ANSI colours and dimming (terminals only)
};

// One JSON object (no newline) in the shape DESIGN.md gives for `--jsonl`; empty for
// messages that are not shown (Sync acknowledgements). WhoReply/RoomsReply must be complete
// (the caller joins `more` chunks).
std::string to_jsonl(const protocol::Message& m, const RenderContext& ctx);

// A line of text (no newline) with a local-time stamp; every byte that came from the server
// and could act on a terminal is neutralised. Empty for messages that are not shown.
std::string to_text(const protocol::Message& m, const RenderContext& ctx);

// The nick in one of six colours chosen by a hash of its folded form, so a nick keeps its
// colour for everyone and across case changes; sanitised, and plain when !ctx.color.
std::string colored_nick(const std::string& nick, const RenderContext& ctx);

// Joins the chunks of a WhoReply or RoomsReply (all but the last have `more`) into one
// complete message, which is what to_jsonl and to_text expect. Not thread-safe.
class ListAssembler {
 public:
  // Returns the message to show: `m` itself, a completed list, or nullopt while a list is
  // still incomplete.
  std::optional<protocol::Message> feed(protocol::Message&& m);

 private:
  protocol::WhoReply who_;
  protocol::RoomsReply rooms_;
};

// Why a connection ended, for the `disconnected` event and the message on stderr.
struct ConnectionLoss {
  protocol::DisconnectReason reason;
  std::string why;  // e.g. "the server died"
};
// `shutdown_notice`: the server said it shuts down; `server_alive`: its process still runs
// (then it dropped us: too slow, or a protocol error).
ConnectionLoss explain_loss(bool shutdown_notice, bool server_alive);

}  // namespace chat::client

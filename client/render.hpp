// How `chat` shows server events: JSON lines (--jsonl) or text for people.
#pragma once

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

}  // namespace chat::client

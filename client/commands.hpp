// What one input line of `chat` asks for: a message or a /command (DESIGN.md "Commands").
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/protocol.hpp"

namespace chat::client {

struct Command {
  enum class Kind {
    kNone,     // empty line: nothing to do
    kSay,      // text (also "//..." with the first '/' removed)
    kAction,   // /me TEXT
    kJoin,     // /join ROOM
    kPart,     // /part [ROOM]  (arg empty: the current room)
    kMsg,      // /msg NICK TEXT
    kNick,     // /nick NEW
    kWho,      // /who [ROOM]
    kWhois,    // /whois NICK
    kRooms,    // /rooms
    kQuit,     // /quit [REASON]
    kHelp,     // /help
    kInvalid,  // `error_code` and `error_text` say why
  };
  Kind kind = Kind::kNone;
  std::string arg;   // room, nick, or reason
  std::string text;  // message text
  std::string error_code;
  std::string error_text;
};

// Parses one line (without its newline; a trailing '\r' is ignored). Checks names and text
// as the server would, so a bad line becomes kInvalid and nothing is sent.
Command parse_command(std::string_view line);

// The /help text, one command per line.
std::string_view help_text();

// What a front end does about one Command.
struct Step {
  std::optional<protocol::Message> send;  // for the server
  std::optional<protocol::Error> error;   // found locally; nothing is sent
  bool help = false;                      // show help_text()
  bool quit = false;                      // `send` holds the Quit; stop reading input
};

// The input side's idea of where the user is: the rooms it asked to be in and the current
// room, which messages and a bare /part or /who go to. /join makes a room current (also one
// the user is already in: that is how to switch); /part of the current room falls back to
// the room joined most recently before it. Names compare case-insensitively, as on the
// server. Not thread-safe: owned by the thread that reads input.
class InputState {
 public:
  explicit InputState(const std::string& room);

  // Turns `c` into a Step and updates the rooms.
  Step apply(const Command& c);

  // Empty when the user is in no room.
  const std::string& current_room() const;

 private:
  std::vector<std::string> rooms_;  // the current room last
};

}  // namespace chat::client

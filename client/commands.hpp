// What one input line of `chat` asks for: a message or a /command (DESIGN.md "Commands").
#pragma once

#include <string>
#include <string_view>

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

}  // namespace chat::client

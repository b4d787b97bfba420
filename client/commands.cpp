#include "client/commands.hpp"

#include <algorithm>

#include "common/validate.hpp"

namespace chat::client {
namespace {

Command invalid(std::string code, std::string text) {
  Command c;
  c.kind = Command::Kind::kInvalid;
  c.error_code = std::move(code);
  c.error_text = std::move(text);
  return c;
}

// Splits off the first space-separated word of `s`; `rest` gets what follows the spaces.
std::string_view first_word(std::string_view s, std::string_view& rest) {
  const auto end = s.find(' ');
  const std::string_view word = s.substr(0, end);
  rest = end == std::string_view::npos ? std::string_view() : s.substr(end + 1);
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  return word;
}

Command with_text(Command::Kind kind, std::string_view text, std::string arg = {}) {
  const TextError e = check_text(text);
  if (e != TextError::kNone) {
    return invalid(std::string(text_error_code(e)), std::string(text_error_message(e)));
  }
  Command c;
  c.kind = kind;
  c.text = std::string(text);
  c.arg = std::move(arg);
  return c;
}

Command with_name(Command::Kind kind, std::string_view name, bool optional, const char* code,
                  const char* what) {
  if (name.empty() && optional) {
    Command c;
    c.kind = kind;
    return c;
  }
  if (!is_valid_name(name)) {
    return invalid(code, std::string("invalid ") + what + " '" + std::string(name) +
                             "' (1-32 of A-Z a-z 0-9 _ - .)");
  }
  Command c;
  c.kind = kind;
  c.arg = std::string(name);
  return c;
}

}  // namespace

Command parse_command(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return {};
  if (line[0] != '/') return with_text(Command::Kind::kSay, line);
  if (line.size() > 1 && line[1] == '/') return with_text(Command::Kind::kSay, line.substr(1));
  std::string_view rest;
  const std::string_view cmd = first_word(line, rest);
  std::string_view after;
  if (cmd == "/me") return with_text(Command::Kind::kAction, rest);
  if (cmd == "/join") {
    const std::string_view room = first_word(rest, after);
    if (room.empty()) return invalid("bad_room", "usage: /join ROOM");
    return with_name(Command::Kind::kJoin, room, false, "bad_room", "room name");
  }
  if (cmd == "/part")
    return with_name(Command::Kind::kPart, first_word(rest, after), true, "bad_room", "room name");
  if (cmd == "/who")
    return with_name(Command::Kind::kWho, first_word(rest, after), true, "bad_room", "room name");
  if (cmd == "/whois") {
    const std::string_view nick = first_word(rest, after);
    if (nick.empty()) return invalid("bad_arguments", "usage: /whois NICK");
    return with_name(Command::Kind::kWhois, nick, false, "no_such_nick", "nickname");
  }
  if (cmd == "/nick") {
    const std::string_view nick = first_word(rest, after);
    if (nick.empty()) return invalid("bad_nick", "usage: /nick NEW");
    return with_name(Command::Kind::kNick, nick, false, "bad_nick", "nickname");
  }
  if (cmd == "/msg") {
    const std::string_view nick = first_word(rest, after);
    if (nick.empty() || after.empty()) return invalid("bad_text", "usage: /msg NICK TEXT");
    Command c = with_name(Command::Kind::kMsg, nick, false, "no_such_nick", "nickname");
    if (c.kind == Command::Kind::kInvalid) return c;
    return with_text(Command::Kind::kMsg, after, c.arg);
  }
  if (cmd == "/rooms") {
    Command c;
    c.kind = Command::Kind::kRooms;
    return c;
  }
  if (cmd == "/quit") {
    Command c;
    c.kind = Command::Kind::kQuit;
    c.arg = std::string(rest);
    if (!c.arg.empty() && check_text(c.arg) != TextError::kNone) {
      return invalid("bad_text", "invalid quit reason");
    }
    return c;
  }
  if (cmd == "/help") {
    Command c;
    c.kind = Command::Kind::kHelp;
    return c;
  }
  return invalid("unknown_command", "unknown command " + sanitize_for_terminal(cmd) +
                                        " (try /help; // sends a literal /)");
}

std::string_view help_text() {
  return "/join ROOM        join ROOM (created if new) and make it the current room\n"
         "/part [ROOM]      leave ROOM (default: the current room)\n"
         "/msg NICK TEXT    private message to NICK\n"
         "/me TEXT          action, shown as '* nick TEXT'\n"
         "/nick NEW         change your nickname\n"
         "/who [ROOM]       members of ROOM (default: the current room)\n"
         "/whois NICK       who NICK is: the Unix account behind it and its rooms\n"
         "/rooms            all rooms and their member counts\n"
         "/quit [REASON]    leave the chat\n"
         "/help             this list\n"
         "//text            send a message that starts with '/'\n";
}

InputState::InputState(const std::string& room) : rooms_{room} {}

const std::string& InputState::current_room() const {
  static const std::string kNone;
  return rooms_.empty() ? kNone : rooms_.back();
}

Step InputState::apply(const Command& c) {
  namespace proto = protocol;
  Step step;
  const auto fail = [&](std::string code, std::string text) {
    step.error = proto::Error{std::move(code), std::move(text)};
    return step;
  };
  const auto find = [&](const std::string& room) {
    return std::find_if(rooms_.begin(), rooms_.end(),
                        [&](const std::string& r) { return fold_name(r) == fold_name(room); });
  };
  switch (c.kind) {
    case Command::Kind::kNone:
      return step;
    case Command::Kind::kInvalid:
      return fail(c.error_code, c.error_text);
    case Command::Kind::kSay:
    case Command::Kind::kAction:
      if (rooms_.empty()) return fail("bad_room", "you are in no room; /join one first");
      step.send = proto::Say{current_room(), c.text, c.kind == Command::Kind::kAction};
      return step;
    case Command::Kind::kJoin:
      if (const auto it = find(c.arg); it != rooms_.end()) rooms_.erase(it);
      rooms_.push_back(c.arg);
      step.send = proto::Join{c.arg};
      return step;
    case Command::Kind::kPart: {
      const std::string room = c.arg.empty() ? current_room() : c.arg;
      if (room.empty()) return fail("bad_room", "you are in no room");
      // Not found here: the server answers bad_room, so the user hears it from one place.
      if (const auto it = find(room); it != rooms_.end()) rooms_.erase(it);
      step.send = proto::Part{room};
      return step;
    }
    case Command::Kind::kMsg:
      step.send = proto::PrivateSend{c.arg, c.text};
      return step;
    case Command::Kind::kNick:
      step.send = proto::NickChange{c.arg};
      return step;
    case Command::Kind::kWho: {
      const std::string room = c.arg.empty() ? current_room() : c.arg;
      if (room.empty()) return fail("bad_room", "you are in no room; say /who ROOM");
      step.send = proto::WhoRequest{room};
      return step;
    }
    case Command::Kind::kWhois:
      step.send = proto::WhoisRequest{c.arg};
      return step;
    case Command::Kind::kRooms:
      step.send = proto::RoomsRequest{};
      return step;
    case Command::Kind::kHelp:
      step.help = true;
      return step;
    case Command::Kind::kQuit:
      step.send = proto::Quit{c.arg};
      step.quit = true;
      return step;
  }
  return step;
}

}  // namespace chat::client

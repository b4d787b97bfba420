// Parsing of input lines into messages and /commands (client/commands.hpp).
#include "client/commands.hpp"

#include <boost/test/unit_test.hpp>
#include <ostream>
#include <string>

#include "common/limits.hpp"

namespace chat::client {

// For Boost.Test's messages (found by argument-dependent lookup).
std::ostream& operator<<(std::ostream& os, Command::Kind k) {
  return os << static_cast<int>(k);
}

namespace {

using Kind = Command::Kind;

Command expect(std::string_view line, Kind kind) {
  const Command c = parse_command(line);
  BOOST_TEST(c.kind == kind, "line '" << line << "'");
  return c;
}

// Asserts `line` is refused with `code` and a reason.
void refused(std::string_view line, const std::string& code) {
  const Command c = expect(line, Kind::kInvalid);
  BOOST_TEST(c.error_code == code, "line '" << line << "'");
  BOOST_TEST(!c.error_text.empty());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(commands)

BOOST_AUTO_TEST_CASE(empty_lines_do_nothing) {
  expect("", Kind::kNone);
  expect("\r", Kind::kNone);
}

BOOST_AUTO_TEST_CASE(plain_text_is_a_message) {
  BOOST_TEST(expect("hello there", Kind::kSay).text == "hello there");
  BOOST_TEST(expect("hello\r", Kind::kSay).text == "hello");  // CRLF input
  BOOST_TEST(expect(" /not a command", Kind::kSay).text == " /not a command");
  BOOST_TEST(expect("tab\tok", Kind::kSay).text == "tab\tok");
  BOOST_TEST(expect(std::string(kMaxTextBytes, 'x'), Kind::kSay).text.size() == kMaxTextBytes);
}

BOOST_AUTO_TEST_CASE(double_slash_sends_a_literal_slash) {
  BOOST_TEST(expect("//etc/passwd", Kind::kSay).text == "/etc/passwd");
  BOOST_TEST(expect("//", Kind::kSay).text == "/");
  BOOST_TEST(expect("//me too", Kind::kSay).text == "/me too");
}

BOOST_AUTO_TEST_CASE(text_is_checked_like_the_server_does) {
  refused(std::string(kMaxTextBytes + 1, 'x'), "too_long");
  refused("clear\x1b[2J", "bad_text");
  refused("bad \xC0\xAF utf8", "bad_text");
  refused("//\x1b", "bad_text");
}

BOOST_AUTO_TEST_CASE(me) {
  BOOST_TEST(expect("/me waves", Kind::kAction).text == "waves");
  BOOST_TEST(expect("/me   waves twice", Kind::kAction).text == "waves twice");
  refused("/me", "bad_text");
  refused("/me ", "bad_text");
  refused("/me \x07", "bad_text");
}

BOOST_AUTO_TEST_CASE(join) {
  BOOST_TEST(expect("/join dev", Kind::kJoin).arg == "dev");
  BOOST_TEST(expect("/join  Dev.2", Kind::kJoin).arg == "Dev.2");
  BOOST_TEST(expect("/join dev extra words", Kind::kJoin).arg == "dev");
  refused("/join", "bad_room");
  refused("/join a/b", "bad_room");
  refused("/join " + std::string(kMaxNameBytes + 1, 'r'), "bad_room");
}

BOOST_AUTO_TEST_CASE(part) {
  BOOST_TEST(expect("/part", Kind::kPart).arg == "");  // the current room
  BOOST_TEST(expect("/part dev", Kind::kPart).arg == "dev");
  refused("/part b@d", "bad_room");
}

BOOST_AUTO_TEST_CASE(msg) {
  const Command c = expect("/msg bob hi there", Kind::kMsg);
  BOOST_TEST(c.arg == "bob");
  BOOST_TEST(c.text == "hi there");
  BOOST_TEST(expect("/msg bob   spaced", Kind::kMsg).text == "spaced");
  refused("/msg", "bad_text");
  refused("/msg bob", "bad_text");
  refused("/msg bob ", "bad_text");
  refused("/msg b!ob hi", "no_such_nick");
  refused("/msg bob \x1b[31m", "bad_text");
  refused("/msg bob " + std::string(kMaxTextBytes + 1, 'x'), "too_long");
}

BOOST_AUTO_TEST_CASE(nick) {
  BOOST_TEST(expect("/nick alicia", Kind::kNick).arg == "alicia");
  refused("/nick", "bad_nick");
  refused("/nick b*d", "bad_nick");
  refused("/nick " + std::string(kMaxNameBytes + 1, 'n'), "bad_nick");
}

BOOST_AUTO_TEST_CASE(who_rooms_quit_help) {
  BOOST_TEST(expect("/who", Kind::kWho).arg == "");
  BOOST_TEST(expect("/who dev", Kind::kWho).arg == "dev");
  refused("/who d/v", "bad_room");
  expect("/rooms", Kind::kRooms);
  BOOST_TEST(expect("/quit", Kind::kQuit).arg == "");
  BOOST_TEST(expect("/quit bye for now", Kind::kQuit).arg == "bye for now");
  refused("/quit \x01", "bad_text");
  expect("/help", Kind::kHelp);
  const std::string help(help_text());
  for (const char* cmd :
       {"/join", "/part", "/msg", "/me", "/nick", "/who", "/rooms", "/quit", "/help", "//"}) {
    BOOST_TEST(help.find(cmd) != std::string::npos, cmd);
  }
}

BOOST_AUTO_TEST_CASE(unknown_command) {
  const Command c = expect("/frobnicate now", Kind::kInvalid);
  BOOST_TEST(c.error_code == "unknown_command");
  BOOST_TEST(c.error_text.find("/frobnicate") != std::string::npos);
  refused("/", "unknown_command");
  refused("/JOIN dev", "unknown_command");
  // The echo of what was typed cannot drive the terminal.
  const Command esc = expect("/\x1b[2J", Kind::kInvalid);
  BOOST_TEST(esc.error_code == "unknown_command");
  BOOST_TEST(esc.error_text.find('\x1b') == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(input_state)

namespace proto = protocol;

// Applies `line` to `state`; returns the Step.
Step step(InputState& state, std::string_view line) {
  return state.apply(parse_command(line));
}

template <typename T>
T sent(const Step& step) {
  BOOST_TEST_REQUIRE(step.send.has_value());
  BOOST_TEST_REQUIRE(std::holds_alternative<T>(*step.send));
  BOOST_TEST(!step.error.has_value());
  return std::get<T>(*step.send);
}

std::string error_of(const Step& step) {
  BOOST_TEST(!step.send.has_value());
  BOOST_TEST_REQUIRE(step.error.has_value());
  BOOST_TEST(!step.error->text.empty());
  return step.error->code;
}

BOOST_AUTO_TEST_CASE(messages_go_to_the_current_room) {
  InputState state("lobby");
  BOOST_TEST(state.current_room() == "lobby");
  const auto say = sent<proto::Say>(step(state, "hello"));
  BOOST_TEST(say.room == "lobby");
  BOOST_TEST(say.text == "hello");
  BOOST_TEST(!say.action);
  const auto me = sent<proto::Say>(step(state, "/me waves"));
  BOOST_TEST(me.action);
  BOOST_TEST(me.text == "waves");
  BOOST_TEST(sent<proto::Say>(step(state, "//slash")).text == "/slash");
}

BOOST_AUTO_TEST_CASE(join_switches_and_part_falls_back) {
  InputState state("lobby");
  BOOST_TEST(sent<proto::Join>(step(state, "/join dev")).room == "dev");
  BOOST_TEST(state.current_room() == "dev");
  BOOST_TEST(sent<proto::Join>(step(state, "/join ops")).room == "ops");
  // Joining a room one is in makes it current again (and is still asked of the server).
  BOOST_TEST(sent<proto::Join>(step(state, "/join DEV")).room == "DEV");
  BOOST_TEST(state.current_room() == "DEV");
  BOOST_TEST(sent<proto::Say>(step(state, "hi")).room == "DEV");
  // A bare /part leaves the current room; the one joined most recently before it is next.
  BOOST_TEST(sent<proto::Part>(step(state, "/part")).room == "DEV");
  BOOST_TEST(state.current_room() == "ops");
  BOOST_TEST(sent<proto::Part>(step(state, "/part LOBBY")).room == "LOBBY");
  BOOST_TEST(state.current_room() == "ops");
  // A room we are not in: the server answers; nothing changes here.
  BOOST_TEST(sent<proto::Part>(step(state, "/part nowhere")).room == "nowhere");
  BOOST_TEST(state.current_room() == "ops");
  BOOST_TEST(sent<proto::Part>(step(state, "/part")).room == "ops");
  BOOST_TEST(state.current_room() == "");
}

BOOST_AUTO_TEST_CASE(outside_every_room) {
  InputState state("lobby");
  sent<proto::Part>(step(state, "/part"));
  BOOST_TEST(error_of(step(state, "hello")) == "bad_room");
  BOOST_TEST(error_of(step(state, "/me waves")) == "bad_room");
  BOOST_TEST(error_of(step(state, "/part")) == "bad_room");
  BOOST_TEST(error_of(step(state, "/who")) == "bad_room");
  BOOST_TEST(sent<proto::WhoRequest>(step(state, "/who dev")).room == "dev");
  sent<proto::PrivateSend>(step(state, "/msg bob still works"));
  sent<proto::Join>(step(state, "/join lobby"));
  BOOST_TEST(sent<proto::Say>(step(state, "back")).room == "lobby");
}

BOOST_AUTO_TEST_CASE(other_commands) {
  InputState state("lobby");
  BOOST_TEST(sent<proto::WhoRequest>(step(state, "/who")).room == "lobby");
  const auto pm = sent<proto::PrivateSend>(step(state, "/msg bob hi there"));
  BOOST_TEST(pm.to == "bob");
  BOOST_TEST(pm.text == "hi there");
  BOOST_TEST(sent<proto::NickChange>(step(state, "/nick alicia")).nick == "alicia");
  sent<proto::RoomsRequest>(step(state, "/rooms"));
  const Step help = step(state, "/help");
  BOOST_TEST(help.help);
  BOOST_TEST(!help.send.has_value());
  const Step quit = step(state, "/quit see you");
  BOOST_TEST(quit.quit);
  BOOST_TEST(sent<proto::Quit>(quit).reason == "see you");
  const Step none = step(state, "");
  BOOST_TEST(!none.send.has_value());
  BOOST_TEST(!none.error.has_value());
  BOOST_TEST(!none.quit);
  BOOST_TEST(error_of(step(state, "/frobnicate")) == "unknown_command");
  BOOST_TEST(error_of(step(state, std::string(kMaxTextBytes + 1, 'x'))) == "too_long");
  BOOST_TEST(state.current_room() == "lobby");  // none of these moved us
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat::client

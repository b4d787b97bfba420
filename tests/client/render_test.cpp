// How server events are shown: --jsonl objects (DESIGN.md) and text lines (client/render.hpp).
#include "client/render.hpp"

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace chat::client {
namespace {

namespace proto = protocol;
using nlohmann::json;

const RenderContext kPlain{"cond", "default", false};
const RenderContext kColor{"cond", "default", true};

// 2023-11-14T22:13:20.123Z
constexpr std::int64_t kTime = 1700000000123;
constexpr char kTimeText[] = "2023-11-14T22:13:20.123Z";

// The --jsonl line for `m`, parsed; also checks it is one line.
json jsonl(const proto::Message& m) {
  const std::string line = to_jsonl(m, kPlain);
  BOOST_TEST(line.find('\n') == std::string::npos);
  return json::parse(line);
}

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(render_jsonl)

BOOST_AUTO_TEST_CASE(welcome) {
  const json j = jsonl(proto::Welcome{"alice", "lobby"});
  BOOST_TEST(j == json::parse(R"({"event":"welcome","nick":"alice","room":"lobby",
                                 "transport":"cond","instance":"default"})"));
}

BOOST_AUTO_TEST_CASE(message) {
  const json j =
      jsonl(proto::RoomMessage{"lobby", "alice", "hi \"there\"", 7, kTime, false, true, 0});
  BOOST_TEST(j["event"] == "message");
  BOOST_TEST(j["room"] == "lobby");
  BOOST_TEST(j["from"] == "alice");
  BOOST_TEST(j["user"] == "root");
  BOOST_TEST(j["text"] == "hi \"there\"");
  BOOST_TEST(j["seq"] == 7);
  BOOST_TEST(j["time"] == kTimeText);
  BOOST_TEST(j["action"] == false);
  BOOST_TEST(j["history"] == true);
  BOOST_TEST(jsonl(proto::RoomMessage{"r", "f", "t", 1, 0, true, false, 0})["action"] == true);
}

BOOST_AUTO_TEST_CASE(user_is_the_login_name_or_the_uid) {
  BOOST_TEST(jsonl(proto::Joined{"r", "n", 1, 0, 0})["user"] == "root");
  BOOST_TEST(jsonl(proto::Joined{"r", "n", 1, 0, 4'000'000'000u})["user"] == "4000000000");
}

BOOST_AUTO_TEST_CASE(private_join_part) {
  const json p = jsonl(proto::PrivateMessage{"alice", "bob", "psst", kTime, 0});
  BOOST_TEST(p ==
             json::parse(std::string(R"({"event":"private","from":"alice","user":"root","to":"bob",
                                              "text":"psst","time":")") +
                         kTimeText + "\"}"));
  const json j = jsonl(proto::Joined{"lobby", "bob", 2, kTime, 0});
  BOOST_TEST(j ==
             json::parse(std::string(R"({"event":"join","room":"lobby","nick":"bob","user":"root",
                                              "seq":2,"time":")") +
                         kTimeText + "\"}"));
  const std::pair<proto::PartReason, const char*> reasons[] = {
      {proto::PartReason::kLeft, "left"},
      {proto::PartReason::kQuit, "quit"},
      {proto::PartReason::kLost, "lost"},
      {proto::PartReason::kEvicted, "evicted"}};
  for (const auto& [reason, name] : reasons) {
    const json part = jsonl(proto::Parted{"lobby", "bob", 3, kTime, reason, 0});
    BOOST_TEST(part["event"] == "part");
    BOOST_TEST(part["nick"] == "bob");
    BOOST_TEST(part["user"] == "root");
    BOOST_TEST(part["seq"] == 3);
    BOOST_TEST(part["reason"] == name);
    BOOST_TEST(part["time"] == kTimeText);
  }
}

BOOST_AUTO_TEST_CASE(nick) {
  const json in_room = jsonl(proto::NickChanged{"alice", "alicia", "lobby", 4, kTime});
  BOOST_TEST(in_room["event"] == "nick");
  BOOST_TEST(in_room["old"] == "alice");
  BOOST_TEST(in_room["new"] == "alicia");
  BOOST_TEST(in_room["room"] == "lobby");
  BOOST_TEST(in_room["seq"] == 4);
  const json alone = jsonl(proto::NickChanged{"alice", "alicia", "", 0, kTime});
  BOOST_TEST(!alone.contains("room"));
  BOOST_TEST(!alone.contains("seq"));
}

BOOST_AUTO_TEST_CASE(who_and_rooms) {
  const json who = jsonl(proto::WhoReply{"lobby", {"alice", "bob"}, false});
  BOOST_TEST(who == json::parse(R"({"event":"who","room":"lobby","nicks":["alice","bob"]})"));
  const json rooms = jsonl(proto::RoomsReply{{{"dev", 1}, {"lobby", 2}}, false});
  BOOST_TEST(rooms == json::parse(R"({"event":"rooms","rooms":[{"name":"dev","members":1},
                                                             {"name":"lobby","members":2}]})"));
  BOOST_TEST(jsonl(proto::RoomsReply{})["rooms"].is_array());
}

BOOST_AUTO_TEST_CASE(notice_error_disconnected) {
  BOOST_TEST(jsonl(proto::Notice{"hey"}) == json::parse(R"({"event":"notice","text":"hey"})"));
  BOOST_TEST(jsonl(proto::Error{"nick_in_use", "taken"}) ==
             json::parse(R"({"event":"error","code":"nick_in_use","text":"taken"})"));
  BOOST_TEST(jsonl(proto::Disconnected{proto::DisconnectReason::kServerGone}) ==
             json::parse(R"({"event":"disconnected","reason":"server_gone"})"));
  BOOST_TEST(jsonl(proto::Disconnected{proto::DisconnectReason::kEvicted})["reason"] == "evicted");
  BOOST_TEST(jsonl(proto::Disconnected{})["reason"] == "shutdown");
}

BOOST_AUTO_TEST_CASE(sync_ack_is_not_shown) {
  BOOST_TEST(to_jsonl(proto::SyncAck{1}, kPlain).empty());
  BOOST_TEST(to_text(proto::SyncAck{1}, kPlain).empty());
}

BOOST_AUTO_TEST_CASE(control_and_invalid_bytes_stay_inside_one_line) {
  // Whatever the server let through, the output is one parseable line.
  const std::string line =
      to_jsonl(proto::RoomMessage{"r", "f", "a\nb\x1b[2J\xC0\xAF", 1, 0, false, false, 0}, kPlain);
  BOOST_TEST(line.find('\n') == std::string::npos);
  BOOST_TEST(line.find('\x1b') == std::string::npos);
  const json j = json::parse(line);
  BOOST_TEST(has(j["text"].get<std::string>(), "a\nb\x1b[2J"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(render_text)

BOOST_AUTO_TEST_CASE(messages) {
  const std::string m =
      to_text(proto::RoomMessage{"lobby", "alice", "hi", 1, kTime, false, false, 0}, kPlain);
  BOOST_TEST(has(m, "#lobby <alice> hi"), m);
  BOOST_TEST(m.front() == '[');  // the time stamp
  const std::string a =
      to_text(proto::RoomMessage{"lobby", "alice", "waves", 1, kTime, true, false, 0}, kPlain);
  BOOST_TEST(has(a, "* alice waves"), a);
  const std::string h =
      to_text(proto::RoomMessage{"lobby", "alice", "old", 1, kTime, false, true, 0}, kPlain);
  BOOST_TEST(has(h, "(history)"), h);
  const std::string p = to_text(proto::PrivateMessage{"alice", "bob", "psst", kTime, 0}, kPlain);
  BOOST_TEST(has(p, "[private] <alice -> bob> psst"), p);
}

BOOST_AUTO_TEST_CASE(events) {
  BOOST_TEST(has(to_text(proto::Welcome{"alice", "lobby"}, kPlain), "alice"));
  BOOST_TEST(has(to_text(proto::Welcome{"alice", "lobby"}, kPlain), "#lobby"));
  BOOST_TEST(has(to_text(proto::Joined{"lobby", "bob", 2, kTime, 0}, kPlain), "bob joined #lobby"));
  BOOST_TEST(
      has(to_text(proto::Parted{"lobby", "bob", 3, kTime, proto::PartReason::kEvicted, 0}, kPlain),
          "bob left #lobby (evicted)"));
  BOOST_TEST(has(to_text(proto::NickChanged{"alice", "alicia", "lobby", 4, kTime}, kPlain),
                 "alice is now known as alicia (#lobby)"));
  BOOST_TEST(
      has(to_text(proto::WhoReply{"lobby", {"alice", "bob"}, false}, kPlain), "#lobby: alice bob"));
  BOOST_TEST(has(to_text(proto::RoomsReply{{{"dev", 1}, {"lobby", 2}}, false}, kPlain),
                 "#dev (1) #lobby (2)"));
  BOOST_TEST(has(to_text(proto::Notice{"note"}, kPlain), "note"));
  BOOST_TEST(has(to_text(proto::Error{"too_long", "long"}, kPlain), "too_long"));
  BOOST_TEST(
      has(to_text(proto::Disconnected{proto::DisconnectReason::kEvicted}, kPlain), "evicted"));
}

BOOST_AUTO_TEST_CASE(server_bytes_cannot_drive_the_terminal) {
  const proto::Message hostile[] = {
      proto::RoomMessage{"lo\x1b]0;x\x07", "ev\x1bil", "\x1b[2J\x1b[H\r", 1, kTime, true, true, 0},
      proto::PrivateMessage{"\x1b[31m", "b\x1b", "\x9b[2J \xC2\x9B[2J", kTime, 0},
      proto::Joined{"\x1b", "\x1b", 1, kTime, 0},
      proto::Parted{"\x1b", "\x1b", 1, kTime, proto::PartReason::kLeft, 0},
      proto::NickChanged{"\x1b", "\x1b", "\x1b", 1, kTime},
      proto::WhoReply{"\x1b", {"\x1b", "a\rb"}, false},
      proto::RoomsReply{{{"\x1b", 1}}, false},
      proto::Notice{"\x1b[2J"},
      proto::Error{"\x1b", "\x1b[2J"},
      proto::Welcome{"\x1b", "\x1b"},
  };
  for (const auto& m : hostile) {
    const std::string plain = to_text(m, kPlain);
    BOOST_TEST(plain.find('\x1b') == std::string::npos, "type " << m.index());
    BOOST_TEST(plain.find('\r') == std::string::npos, "type " << m.index());
    BOOST_TEST(plain.find('\x07') == std::string::npos, "type " << m.index());
    BOOST_TEST(plain.find("\xC2\x9B") == std::string::npos, "type " << m.index());
    // In colour the only escapes are our own SGR sequences.
    const std::string color = to_text(m, kColor);
    for (std::size_t at = color.find('\x1b'); at != std::string::npos;
         at = color.find('\x1b', at + 1)) {
      const std::size_t end = color.find('m', at);
      BOOST_TEST_REQUIRE(end != std::string::npos);
      const std::string seq = color.substr(at, end - at + 1);
      BOOST_TEST((seq == "\x1b[0m" || seq == "\x1b[2m" || seq.size() == 5u), seq.substr(1));
    }
  }
}

BOOST_AUTO_TEST_CASE(nick_colours_are_stable_and_case_insensitive) {
  const auto line = [](const std::string& nick) {
    return to_text(proto::RoomMessage{"lobby", nick, "hi", 1, kTime, false, false, 0}, kColor);
  };
  const auto colour_of = [](const std::string& s) {
    const std::size_t at = s.find("<\x1b[");
    return at == std::string::npos ? std::string() : s.substr(at + 1, 5);
  };
  BOOST_TEST(!colour_of(line("alice")).empty());
  BOOST_TEST(colour_of(line("alice")) == colour_of(line("alice")));
  BOOST_TEST(colour_of(line("alice")) == colour_of(line("ALICE")));
  // Six colours: among a few nicks, more than one is used.
  std::set<std::string> used;
  for (const char* n : {"alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi"}) {
    used.insert(colour_of(line(n)));
  }
  BOOST_TEST(used.size() > 1u);
  // Without colour there are no escapes at all.
  BOOST_TEST(to_text(proto::RoomMessage{"lobby", "alice", "hi", 1, kTime, false, true, 0}, kPlain)
                 .find('\x1b') == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(render_helpers)

BOOST_AUTO_TEST_CASE(colored_nick_is_sanitised_and_plain_without_colour) {
  BOOST_TEST(colored_nick("alice", kPlain) == "alice");
  BOOST_TEST(colored_nick("a\x1b[2Jb", kPlain) == "a^[[2Jb");
  const std::string c = colored_nick("alice", kColor);
  BOOST_TEST(c.find("alice") != std::string::npos);
  BOOST_TEST(c.substr(c.size() - 4) == "\x1b[0m");
  BOOST_TEST(colored_nick("ALICE", kColor).substr(0, 5) == c.substr(0, 5));
}

BOOST_AUTO_TEST_CASE(list_chunks_are_joined) {
  ListAssembler lists;
  BOOST_TEST(!lists.feed(proto::WhoReply{"lobby", {"a", "b"}, true}).has_value());
  BOOST_TEST(!lists.feed(proto::WhoReply{"lobby", {"c"}, true}).has_value());
  const auto who = lists.feed(proto::WhoReply{"lobby", {"d"}, false});
  BOOST_TEST_REQUIRE(who.has_value());
  const auto& w = std::get<proto::WhoReply>(*who);
  BOOST_TEST(w.room == "lobby");
  BOOST_TEST((w.nicks == std::vector<std::string>{"a", "b", "c", "d"}));
  BOOST_TEST(!w.more);
  // The next list starts afresh.
  const auto next = lists.feed(proto::WhoReply{"dev", {"x"}, false});
  BOOST_TEST_REQUIRE(next.has_value());
  BOOST_TEST(std::get<proto::WhoReply>(*next).room == "dev");
  BOOST_TEST((std::get<proto::WhoReply>(*next).nicks == std::vector<std::string>{"x"}));

  BOOST_TEST(!lists.feed(proto::RoomsReply{{{"a", 1}}, true}).has_value());
  // Other messages pass through while a list is incomplete.
  const auto notice = lists.feed(proto::Notice{"meanwhile"});
  BOOST_TEST_REQUIRE(notice.has_value());
  BOOST_TEST(std::get<proto::Notice>(*notice).text == "meanwhile");
  const auto rooms = lists.feed(proto::RoomsReply{{{"b", 2}}, false});
  BOOST_TEST_REQUIRE(rooms.has_value());
  BOOST_TEST((std::get<proto::RoomsReply>(*rooms).rooms ==
              std::vector<proto::RoomInfo>{{"a", 1}, {"b", 2}}));
  const auto empty = lists.feed(proto::RoomsReply{{}, false});
  BOOST_TEST_REQUIRE(empty.has_value());
  BOOST_TEST(std::get<proto::RoomsReply>(*empty).rooms.empty());
}

BOOST_AUTO_TEST_CASE(connection_loss_is_explained) {
  BOOST_TEST((explain_loss(true, true).reason == proto::DisconnectReason::kShutdown));
  BOOST_TEST((explain_loss(true, false).reason == proto::DisconnectReason::kShutdown));
  BOOST_TEST((explain_loss(false, false).reason == proto::DisconnectReason::kServerGone));
  BOOST_TEST((explain_loss(false, true).reason == proto::DisconnectReason::kEvicted));
  BOOST_TEST(!explain_loss(false, true).why.empty());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat::client

// Integration: every chat command over every transport, with real chatd and `chat --jsonl`
// processes (DESIGN.md "Commands" and the `--jsonl` event table).
#define BOOST_TEST_MODULE commands
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <functional>
#include <set>

#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"

namespace bdata = boost::unit_test::data;
using namespace chat::test;
using nlohmann::json;

namespace {

using Match = std::function<bool(const json&)>;

// Every event of `p` so far that `match` accepts.
std::vector<json> matching(const Process& p, const Match& match) {
  std::vector<json> out;
  for (auto& e : events(p)) {
    if (match(e)) out.push_back(std::move(e));
  }
  return out;
}

// Waits until `p` printed `n` events that `match` accepts; returns the first `n` of them
// (fewer on timeout, which the caller's checks then report).
std::vector<json> await(Process& p, const Match& match, std::size_t n = 1,
                        std::chrono::milliseconds timeout = 5s) {
  p.wait_out(
      [&](const std::string& out) {
        std::size_t found = 0;
        for (const auto& line : lines_of(out)) {
          const auto e = json::parse(line, nullptr, false);
          if (!e.is_discarded() && match(e)) ++found;
        }
        return found >= n;
      },
      timeout);
  auto all = matching(p, match);
  if (all.size() > n) all.resize(n);
  BOOST_CHECK_MESSAGE(all.size() == n, "waited for " << n << " events, saw " << all.size()
                                                     << "; output:\n"
                                                     << p.out() << p.err());
  return all;
}

json await_one(Process& p, const Match& match) {
  auto all = await(p, match);
  return all.empty() ? json::object() : all.front();
}

Match event_is(const std::string& kind) {
  return [kind](const json& e) { return e.value("event", "") == kind; };
}

Match message_with(const std::string& text) {
  return [text](const json& e) {
    return e.value("event", "") == "message" && e.value("text", "") == text;
  };
}

Match join_of(const std::string& nick, const std::string& room) {
  return [nick, room](const json& e) {
    return e.value("event", "") == "join" && e.value("nick", "") == nick &&
           e.value("room", "") == room;
  };
}

// The texts of the `message` events of `p`, in order.
std::vector<std::string> texts(const Process& p) {
  std::vector<std::string> out;
  for (const auto& e : events(p, "message")) out.push_back(e["text"]);
  return out;
}

// One case's server and clients. finish() ends every client that still runs (stdin closed,
// exit 0 expected), stops the server and checks nothing is left behind.
class Scene {
 public:
  explicit Scene(const std::string& transport, std::vector<std::string> chatd_args = {})
      : chatd_(start_chatd(rt_, transport, std::move(chatd_args))) {}

  Process& chat(const std::string& nick, std::vector<std::string> extra = {}) {
    clients_.push_back(start_chat(rt_, nick, std::move(extra)));
    pids_.push_back(clients_.back()->pid());
    return *clients_.back();
  }

  // A client without --jsonl: what a person reading a pipe sees.
  Process& text_chat(const std::string& nick) {
    std::vector<std::string> argv = {binary("chat").string(), "-n", nick};
    for (auto& a : rt_.args()) argv.push_back(a);
    clients_.push_back(std::make_unique<Process>(argv));
    pids_.push_back(clients_.back()->pid());
    BOOST_REQUIRE(clients_.back()->wait_out_contains("welcome", 10s));
    return *clients_.back();
  }

  void finish() {
    for (auto& c : clients_) c->close_stdin();
    for (auto& c : clients_) {
      BOOST_CHECK_MESSAGE(c->exit_code(10s) == 0, "a client did not exit 0: " << c->err());
    }
    stop_and_check_clean(*chatd_, rt_, pids_);
  }

  const TempRuntime& runtime() const { return rt_; }

 private:
  TempRuntime rt_;
  std::unique_ptr<Process> chatd_;
  std::vector<std::unique_ptr<Process>> clients_;
  std::vector<pid_t> pids_;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(commands)

BOOST_DATA_TEST_CASE(join_makes_a_room_current_and_a_client_can_be_in_several,
                     bdata::make(all_backends()), transport) {
  Scene scene(transport);
  Process& alice = scene.chat("alice");
  Process& bob = scene.chat("bob");
  await_one(alice, join_of("bob", "lobby"));

  alice.write("/join dev\nin dev\n");
  BOOST_TEST(await_one(alice, message_with("in dev")).value("room", "") == "dev");
  // alice is in lobby and dev: she still hears lobby.
  bob.write("in lobby\n");
  BOOST_TEST(await_one(alice, message_with("in lobby")).value("room", "") == "lobby");
  // /join of a room she is in switches to it.
  alice.write("/join LOBBY\nback in lobby\n");
  BOOST_TEST(await_one(alice, message_with("back in lobby")).value("room", "") == "lobby");
  BOOST_TEST(await_one(alice, event_is("notice")).value("text", "").find("already") !=
             std::string::npos);

  // bob joins dev under another spelling: the room keeps its name, and he gets its history.
  bob.write("/join DEV\nhello dev\n");
  const json hello = await_one(alice, message_with("hello dev"));
  BOOST_TEST(hello.value("room", "") == "dev");
  BOOST_TEST(hello.value("from", "") == "bob");
  await_one(bob, message_with("hello dev"));
  const auto bob_dev = matching(bob, [](const json& e) { return e.value("room", "") == "dev"; });
  BOOST_REQUIRE_EQUAL(bob_dev.size(), 3u);
  BOOST_TEST(bob_dev[0].value("text", "") == "in dev");
  BOOST_TEST(bob_dev[0].value("history", false));
  BOOST_TEST(bob_dev[1].value("event", "") == "join");
  BOOST_TEST(bob_dev[2].value("text", "") == "hello dev");
  BOOST_TEST(!bob_dev[2].value("history", true));

  // Per-room seq: dev counts its own events, from 1.
  std::vector<std::uint64_t> dev_seqs;
  for (const auto& e :
       matching(alice, [](const json& e) { return e.value("room", "") == "dev"; })) {
    dev_seqs.push_back(e["seq"]);
  }
  BOOST_TEST((dev_seqs == std::vector<std::uint64_t>{1, 2, 3, 4}));
  // bob was never in dev when "in dev" was said live, and "back in lobby" went to lobby only.
  BOOST_TEST(matching(bob, [](const json& e) {
               return e.value("text", "") == "in dev" && !e.value("history", false);
             }).empty());
  check_contiguous(alice, "alice");
  check_contiguous(bob, "bob");
  scene.finish();
}

BOOST_DATA_TEST_CASE(part_leaves_the_current_or_the_named_room, bdata::make(all_backends()),
                     transport) {
  Scene scene(transport);
  Process& alice = scene.chat("alice");
  Process& bob = scene.chat("bob");
  await_one(alice, join_of("bob", "lobby"));

  // Leaving the current room (names fold case) falls back to the one joined before it.
  alice.write("/join dev\n/join ops\n/part OPS\nafter part\n");
  const json part_ops = await_one(alice, [](const json& e) {
    return e.value("event", "") == "part" && e.value("room", "") == "ops";
  });
  BOOST_TEST(part_ops.value("nick", "") == "alice");
  BOOST_TEST(part_ops.value("reason", "") == "left");
  BOOST_TEST(await_one(alice, message_with("after part")).value("room", "") == "dev");

  // A named room that is not the current one: the current room stays.
  alice.write("/part lobby\nstill dev\n");
  const json part_lobby = await_one(bob, event_is("part"));
  BOOST_TEST(part_lobby.value("nick", "") == "alice");
  BOOST_TEST(part_lobby.value("room", "") == "lobby");
  BOOST_TEST(part_lobby.value("reason", "") == "left");
  BOOST_TEST(await_one(alice, message_with("still dev")).value("room", "") == "dev");

  // In no room at all: messages are refused locally, unknown rooms by the server.
  alice.write("/part\nnowhere\n/part nosuch\n/join lobby\nback\n");
  BOOST_TEST(await_one(bob, message_with("back")).value("from", "") == "alice");
  await_one(alice, message_with("back"));
  const auto errors = events(alice, "error");
  BOOST_REQUIRE_EQUAL(errors.size(), 2u);
  for (const auto& e : errors) BOOST_TEST(e.value("code", "") == "bad_room");
  BOOST_TEST(texts(alice) == (std::vector<std::string>{"after part", "still dev", "back"}));
  BOOST_TEST(alice.wait_err_contains("bad_room", 5s));

  // Rooms without members are gone.
  bob.write("/rooms\n");
  const json rooms = await_one(bob, event_is("rooms"));
  BOOST_TEST(rooms["rooms"] == json::parse(R"([{"name":"lobby","members":2}])"));
  check_contiguous(alice, "alice");
  check_contiguous(bob, "bob");
  scene.finish();
}

BOOST_DATA_TEST_CASE(rooms_lists_every_room_with_its_member_count, bdata::make(all_backends()),
                     transport) {
  Scene scene(transport);
  Process& alice = scene.chat("alice");
  Process& bob = scene.chat("bob");
  alice.write("/join dev\n");
  await_one(alice, join_of("alice", "dev"));
  bob.write("/join dev\n/join ops\n");
  await_one(bob, join_of("bob", "ops"));
  alice.write("/rooms\n");
  const json rooms = await_one(alice, event_is("rooms"));
  BOOST_TEST(rooms["rooms"] == json::parse(R"([{"name":"dev","members":2},
                                               {"name":"lobby","members":2},
                                               {"name":"ops","members":1}])"));
  scene.finish();
}

BOOST_DATA_TEST_CASE(msg_reaches_both_ends_and_no_one_else, bdata::make(all_backends()),
                     transport) {
  Scene scene(transport);
  Process& alice = scene.chat("alice");
  Process& bob = scene.chat("bob");
  Process& carol = scene.chat("carol");
  alice.write("/msg bob psst\n/msg BOB louder\n/msg nobody hello?\n/msg bob\n/msg alice note\n");
  const auto to_bob = await(bob, event_is("private"), 2);
  BOOST_REQUIRE_EQUAL(to_bob.size(), 2u);
  BOOST_TEST(to_bob[0].value("from", "") == "alice");
  BOOST_TEST(to_bob[0].value("to", "") == "bob");
  BOOST_TEST(to_bob[0].value("text", "") == "psst");
  BOOST_TEST(!to_bob[0].value("time", "").empty());
  BOOST_TEST(to_bob[1].value("to", "") == "bob");  // the nick as its owner spells it
  BOOST_TEST(to_bob[1].value("text", "") == "louder");

  const auto at_alice = await(alice, event_is("private"), 3);
  BOOST_REQUIRE_EQUAL(at_alice.size(), 3u);
  BOOST_TEST(at_alice[0] == to_bob[0]);
  BOOST_TEST(at_alice[1] == to_bob[1]);
  BOOST_TEST(at_alice[2].value("to", "") == "alice");  // a note to herself, once
  const auto errors = await(alice, event_is("error"), 2);
  BOOST_REQUIRE_EQUAL(errors.size(), 2u);
  BOOST_TEST(errors[0].value("code", "") == "no_such_nick");
  BOOST_TEST(errors[1].value("code", "") == "bad_text");  // "/msg bob" without text

  // carol asks after alice's messages were handled, so anything for her came first.
  carol.write("/who\n");
  await_one(carol, event_is("who"));
  BOOST_TEST(events(carol, "private").empty());
  BOOST_TEST(events(bob, "private").size() == 2u);
  BOOST_TEST(events(bob, "message").empty());
  scene.finish();
}

BOOST_DATA_TEST_CASE(nick_is_announced_in_every_room_and_stays_unique, bdata::make(all_backends()),
                     transport) {
  Scene scene(transport);
  Process& alice = scene.chat("alice");
  Process& bob = scene.chat("bob");
  Process& carol = scene.chat("carol");
  alice.write("/join dev\n");
  await_one(alice, join_of("alice", "dev"));
  bob.write("/join dev\n");
  await_one(alice, join_of("bob", "dev"));

  alice.write("/nick Alicia\nhi\n");
  await_one(bob, message_with("hi"));
  // bob shares lobby and dev with her: one event per room, each in that room's seq.
  const auto at_bob = events(bob, "nick");
  BOOST_REQUIRE_EQUAL(at_bob.size(), 2u);
  std::set<std::string> rooms;
  for (const auto& e : at_bob) {
    BOOST_TEST(e.value("old", "") == "alice");
    BOOST_TEST(e.value("new", "") == "Alicia");
    BOOST_TEST(e.contains("seq"));
    rooms.insert(e.value("room", ""));
  }
  BOOST_TEST((rooms == std::set<std::string>{"dev", "lobby"}));
  BOOST_TEST(events(bob, "message").back().value("from", "") == "Alicia");
  // carol shares lobby only.
  const auto at_carol = await(carol, event_is("nick"));
  BOOST_REQUIRE_EQUAL(at_carol.size(), 1u);
  BOOST_TEST(at_carol[0].value("room", "") == "lobby");
  BOOST_TEST(await(alice, event_is("nick"), 2).size() == 2u);

  // Nicks stay unique case-insensitively; the old one is free again; a change of case of
  // one's own nick is allowed.
  bob.write("/nick ALICIA\n/nick b@d\n/nick alice\n");
  const auto errors = await(bob, event_is("error"), 2);
  BOOST_REQUIRE_EQUAL(errors.size(), 2u);
  BOOST_TEST(errors[0].value("code", "") == "nick_in_use");
  BOOST_TEST(errors[1].value("code", "") == "bad_nick");
  await(carol, [](const json& e) {
    return e.value("event", "") == "nick" && e.value("new", "") == "alice";
  });
  carol.write("/nick Carol\n");
  const json recased = await_one(alice, [](const json& e) {
    return e.value("event", "") == "nick" && e.value("new", "") == "Carol";
  });
  BOOST_TEST(recased.value("old", "") == "carol");
  BOOST_TEST(matching(alice, [](const json& e) {
               return e.value("event", "") == "nick" && e.value("new", "") == "ALICIA";
             }).empty());
  check_contiguous(alice, "alice");
  check_contiguous(bob, "bob");
  check_contiguous(carol, "carol");
  scene.finish();
}

BOOST_DATA_TEST_CASE(who_lists_the_members_of_a_room_sorted, bdata::make(all_backends()),
                     transport) {
  Scene scene(transport);
  Process& carol = scene.chat("carol");
  scene.chat("alice");
  Process& bob = scene.chat("bob");
  await_one(carol, join_of("bob", "lobby"));
  bob.write("/who\n/join dev\n/who\n/who lobby\n/who nosuch\n");
  const auto who = await(bob, event_is("who"), 3);
  BOOST_REQUIRE_EQUAL(who.size(), 3u);
  BOOST_TEST(who[0].value("room", "") == "lobby");
  BOOST_TEST(who[0]["nicks"] == json::parse(R"(["alice","bob","carol"])"));
  BOOST_TEST(who[1].value("room", "") == "dev");
  BOOST_TEST(who[1]["nicks"] == json::parse(R"(["bob"])"));
  BOOST_TEST(who[2]["nicks"] == who[0]["nicks"]);
  BOOST_TEST(await_one(bob, event_is("error")).value("code", "") == "bad_room");
  scene.finish();
}

BOOST_DATA_TEST_CASE(me_sends_an_action, bdata::make(all_backends()), transport) {
  Scene scene(transport);
  Process& alice = scene.chat("alice");
  Process& bob = scene.chat("bob");
  Process& dave = scene.text_chat("dave");
  await_one(alice, join_of("dave", "lobby"));
  alice.write("/me waves\nplain\n");
  const auto msgs = await(bob, event_is("message"), 2);
  BOOST_REQUIRE_EQUAL(msgs.size(), 2u);
  BOOST_TEST(msgs[0].value("text", "") == "waves");
  BOOST_TEST(msgs[0].value("action", false));
  BOOST_TEST(msgs[0].value("from", "") == "alice");
  BOOST_TEST(!msgs[1].value("action", true));
  // People see it as an action.
  BOOST_TEST(dave.wait_out_contains("* alice waves", 5s), dave.out());
  BOOST_TEST(dave.wait_out_contains("<alice> plain", 5s), dave.out());
  scene.finish();
}

BOOST_DATA_TEST_CASE(quit_with_a_reason_ends_the_client_at_once, bdata::make(all_backends()),
                     transport) {
  Scene scene(transport);
  Process& alice = scene.chat("alice");
  Process& bob = scene.chat("bob");
  await_one(alice, join_of("bob", "lobby"));
  // stdin stays open: /quit alone ends bob, and nothing after it is sent.
  bob.write("last words\n/quit gone fishing\nnot sent\n");
  BOOST_TEST(bob.exit_code(5s) == 0, bob.err());
  const json part = await_one(alice, event_is("part"));
  BOOST_TEST(part.value("nick", "") == "bob");
  BOOST_TEST(part.value("reason", "") == "quit");
  BOOST_TEST(texts(alice) == std::vector<std::string>{"last words"});
  BOOST_TEST(texts(bob) == std::vector<std::string>{"last words"});
  scene.finish();
}

BOOST_DATA_TEST_CASE(help_lists_every_command, bdata::make(all_backends()), transport) {
  Scene scene(transport);
  Process& alice = scene.chat("alice");
  alice.write("/help\n");
  const std::string help = await_one(alice, event_is("notice")).value("text", "");
  for (const char* cmd : {"/join ROOM", "/part [ROOM]", "/msg NICK TEXT", "/me TEXT", "/nick NEW",
                          "/who [ROOM]", "/rooms", "/quit [REASON]", "/help", "//"}) {
    BOOST_TEST(help.find(cmd) != std::string::npos, "/help does not mention " << cmd);
  }
  scene.finish();
}

BOOST_DATA_TEST_CASE(double_slash_sends_a_slash_and_unknown_commands_are_errors,
                     bdata::make(all_backends()), transport) {
  Scene scene(transport);
  Process& alice = scene.chat("alice");
  Process& bob = scene.chat("bob");
  await_one(alice, join_of("bob", "lobby"));
  alice.write("//etc is a path\n/frobnicate now\nafter\n");
  await(bob, message_with("after"));
  BOOST_TEST(texts(bob) == (std::vector<std::string>{"/etc is a path", "after"}));
  // The errors come in input order, between the echoes of the lines around them.
  await(alice, message_with("after"));
  std::vector<std::string> seen;
  for (const auto& e : events(alice)) {
    if (e["event"] == "message") seen.push_back(e["text"]);
    if (e["event"] == "error") seen.push_back(e.value("code", "") + " " + e.value("text", ""));
  }
  BOOST_REQUIRE_EQUAL(seen.size(), 3u);
  BOOST_TEST(seen[0] == "/etc is a path");
  BOOST_TEST(seen[1].rfind("unknown_command", 0) == 0);
  BOOST_TEST(seen[1].find("/frobnicate") != std::string::npos);
  BOOST_TEST(seen[2] == "after");
  BOOST_TEST(alice.wait_err_contains("unknown_command", 5s));
  scene.finish();
}

BOOST_DATA_TEST_CASE(a_joining_member_gets_the_last_history_messages_first,
                     bdata::make(all_backends()), transport) {
  Scene scene(transport, {"--history=5"});
  Process& alice = scene.chat("alice");
  alice.write("m1\nm2\nm3\nm4\nm5\nm6\nm7\n/me m8\n");
  const auto said = await(alice, event_is("message"), 8);
  BOOST_REQUIRE_EQUAL(said.size(), 8u);

  Process& carol = scene.chat("carol");
  await_one(carol, join_of("carol", "lobby"));
  alice.write("m9\n");
  await_one(carol, message_with("m9"));
  const auto seen = matching(carol, [](const json& e) { return e.contains("seq"); });
  BOOST_REQUIRE_EQUAL(seen.size(), 7u);  // 5 replayed, her join, m9
  for (int i = 0; i < 5; ++i) {
    const json& h = seen[static_cast<std::size_t>(i)];
    const json& original = said[static_cast<std::size_t>(i + 3)];
    BOOST_TEST(h.value("history", false));
    BOOST_TEST(h.value("text", "") == original.value("text", "?"));
    BOOST_TEST(h.value("seq", 0) == original.value("seq", 1));
    BOOST_TEST(h.value("time", "") == original.value("time", "?"));
    BOOST_TEST(h.value("action", false) == original.value("action", true));
  }
  BOOST_TEST(seen[4].value("action", false));  // "/me m8" stays an action
  BOOST_TEST(seen[5].value("event", "") == "join");
  BOOST_TEST(seen[5].value("seq", 0) > seen[4].value("seq", 0));
  BOOST_TEST(seen[6].value("text", "") == "m9");
  BOOST_TEST(!seen[6].value("history", true));
  BOOST_TEST(seen[6].value("seq", 0) == seen[5].value("seq", 0) + 1);
  // Those already in the room are not sent history again.
  BOOST_TEST(matching(alice, [](const json& e) { return e.value("history", false); }).empty());
  scene.finish();
}

BOOST_DATA_TEST_CASE(history_and_live_messages_meet_without_gaps_or_duplicates,
                     bdata::make(all_backends()), transport) {
  Scene scene(transport, {"--history=20"});
  Process& alice = scene.chat("alice");
  std::string first, second;
  for (int i = 1; i <= 40; ++i) first += "n" + std::to_string(i) + "\n";
  for (int i = 41; i <= 100; ++i) second += "n" + std::to_string(i) + "\n";
  alice.write(first);
  await(alice, message_with("n40"));
  // carol joins while alice is still talking.
  alice.write(second);
  Process& carol = scene.chat("carol");
  await(carol, message_with("n100"));
  const auto msgs = events(carol, "message");
  std::size_t replayed = 0;
  while (replayed < msgs.size() && msgs[replayed].value("history", false)) ++replayed;
  BOOST_TEST(replayed == 20u);
  std::vector<int> numbers;
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    BOOST_TEST(msgs[i].value("history", false) == (i < replayed), "history after a live message");
    numbers.push_back(std::stoi(msgs[i].value("text", "n0").substr(1)));
  }
  // One run of consecutive numbers ending at n100: nothing missed, nothing twice.
  BOOST_REQUIRE(!numbers.empty());
  for (std::size_t i = 1; i < numbers.size(); ++i) BOOST_TEST(numbers[i] == numbers[i - 1] + 1);
  BOOST_TEST(numbers.back() == 100);
  check_contiguous(carol, "carol");
  scene.finish();
}

BOOST_DATA_TEST_CASE(history_can_be_turned_off, bdata::make(all_backends()), transport) {
  Scene scene(transport, {"--history=0"});
  Process& alice = scene.chat("alice");
  alice.write("before\n");
  await_one(alice, message_with("before"));
  Process& carol = scene.chat("carol");
  alice.write("after\n");
  await_one(carol, message_with("after"));
  BOOST_TEST(texts(carol) == std::vector<std::string>{"after"});
  scene.finish();
}

BOOST_AUTO_TEST_SUITE_END()

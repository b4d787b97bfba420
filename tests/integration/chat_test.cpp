// Integration: a real chatd and real `chat --jsonl` processes, over every transport.
#define BOOST_TEST_MODULE chat_integration
#include <signal.h>

#include <algorithm>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <map>
#include <set>

#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"

namespace bdata = boost::unit_test::data;
using namespace chat::test;
using nlohmann::json;

BOOST_AUTO_TEST_SUITE(integration)

BOOST_DATA_TEST_CASE(three_clients_hundreds_of_messages_one_order, bdata::make(all_backends()),
                     transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  constexpr int kPerClient = 150;
  const std::vector<std::string> nicks = {"alice", "bob", "carol"};
  std::vector<std::unique_ptr<Process>> clients;
  for (const auto& n : nicks) clients.push_back(start_chat(rt, n));
  BOOST_REQUIRE(wait_events(*clients[0], "join", 3, std::chrono::seconds(10)));
  // Everyone types at once.
  for (std::size_t i = 0; i < clients.size(); ++i) {
    std::string lines;
    for (int k = 0; k < kPerClient; ++k) lines += nicks[i] + " says " + std::to_string(k) + "\n";
    clients[i]->write(lines);
  }
  const std::size_t total = nicks.size() * kPerClient;
  for (auto& c : clients) {
    BOOST_REQUIRE_MESSAGE(wait_events(*c, "message", total, std::chrono::seconds(60)),
                          "not all messages arrived: " << c->err());
  }
  for (auto& c : clients) c->close_stdin();
  for (auto& c : clients) {
    const auto code = c->wait(std::chrono::seconds(10));
    BOOST_CHECK_MESSAGE(code && *code == 0, "chat did not exit 0: " << c->err());
  }
  // One order: the same (seq, from, text) list for everyone, with no gaps or duplicates.
  std::vector<std::vector<std::tuple<std::uint64_t, std::string, std::string>>> seen;
  for (const auto& c : clients) {
    auto& list = seen.emplace_back();
    for (const auto& m : events(*c, "message")) list.emplace_back(m["seq"], m["from"], m["text"]);
  }
  BOOST_REQUIRE_EQUAL(seen[0].size(), total);
  for (std::size_t i = 1; i < seen.size(); ++i) BOOST_CHECK(seen[i] == seen[0]);
  std::map<std::string, int> next;
  for (std::size_t k = 0; k < seen[0].size(); ++k) {
    const auto& [seq, from, text] = seen[0][k];
    if (k > 0) BOOST_CHECK_EQUAL(seq, std::get<0>(seen[0][k - 1]) + 1);
    BOOST_CHECK_EQUAL(text, from + " says " + std::to_string(next[from]++));
  }
  for (std::size_t i = 0; i < clients.size(); ++i) check_contiguous(*clients[i], nicks[i]);
  std::vector<pid_t> pids;
  for (auto& c : clients) pids.push_back(c->pid());
  stop_and_check_clean(*chatd, rt, pids);
}

BOOST_DATA_TEST_CASE(piped_client_loses_nothing_at_end_of_input, bdata::make(all_backends()),
                     transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto watcher = start_chat(rt, "watcher");
  std::vector<std::string> argv = {binary("chat").string(), "-n", "bot", "--jsonl"};
  for (auto& a : rt.args()) argv.push_back(a);
  Process bot(argv);
  std::string lines;
  for (int k = 0; k < 500; ++k) lines += "line " + std::to_string(k) + "\n";
  lines += "last line without newline";
  bot.write(lines);
  bot.close_stdin();
  const auto code = bot.wait(std::chrono::seconds(20));
  BOOST_REQUIRE_MESSAGE(code && *code == 0, "bot did not exit 0: " << bot.err());
  // Its own echo of every line came back before it left...
  BOOST_TEST(count_events(bot.out(), "message") == 501u);
  // ...and the others got every one of them, then its part.
  BOOST_REQUIRE(wait_events(*watcher, "part", 1, std::chrono::seconds(5)));
  const auto msgs = events(*watcher, "message");
  BOOST_REQUIRE_EQUAL(msgs.size(), 501u);
  BOOST_TEST(msgs.back()["text"] == "last line without newline");
  const auto parts = events(*watcher, "part");
  BOOST_TEST(parts[0]["nick"] == "bot");
  BOOST_TEST(parts[0]["reason"] == "quit");
  watcher->close_stdin();
  BOOST_TEST(watcher->exit_code(std::chrono::seconds(10)) == 0);
  stop_and_check_clean(*chatd, rt, {bot.pid(), watcher->pid()});
}

BOOST_DATA_TEST_CASE(join_and_part_are_announced, bdata::make(all_backends()), transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  auto bob = start_chat(rt, "bob");
  bob->write("hi alice\n");
  bob->close_stdin();
  BOOST_TEST(bob->exit_code(std::chrono::seconds(10)) == 0);
  BOOST_REQUIRE(wait_events(*alice, "part", 1, std::chrono::seconds(5)));
  const auto all = events(*alice);
  std::vector<std::string> kinds;
  for (const auto& e : all) kinds.push_back(e["event"]);
  BOOST_TEST((kinds == std::vector<std::string>{"welcome", "join", "join", "message", "part"}));
  BOOST_TEST(all[2]["nick"] == "bob");
  BOOST_TEST(all[3]["from"] == "bob");
  BOOST_TEST(all[3]["text"] == "hi alice");
  BOOST_TEST(all[4]["reason"] == "quit");
  BOOST_TEST(all[0]["transport"] == transport);
  BOOST_TEST(all[0]["instance"] == rt.instance());
  alice->close_stdin();
  alice->wait(std::chrono::seconds(10));
  stop_and_check_clean(*chatd, rt, {alice->pid(), bob->pid()});
}

BOOST_DATA_TEST_CASE(duplicate_or_bad_nick_exits_4, bdata::make(all_backends()), transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  auto twin = start_chat(rt, "ALICE", {}, false);
  BOOST_TEST(twin->exit_code(std::chrono::seconds(10)) == 4);
  BOOST_TEST(twin->err().find("nick_in_use") != std::string::npos);
  auto bad = start_chat(rt, "no spaces", {}, false);
  BOOST_TEST(bad->exit_code(std::chrono::seconds(10)) == 4);
  BOOST_TEST(bad->err().find("bad_nick") != std::string::npos);
  // The refused twin never showed up in the room.
  alice->write("still here\n");
  BOOST_REQUIRE(wait_events(*alice, "message", 1, std::chrono::seconds(5)));
  BOOST_TEST(count_events(alice->out(), "join") == 1u);
  alice->close_stdin();
  alice->wait(std::chrono::seconds(10));
  stop_and_check_clean(*chatd, rt, {alice->pid(), twin->pid()});
}

BOOST_DATA_TEST_CASE(killed_client_is_seen_as_lost, bdata::make(all_backends()), transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  auto bob = start_chat(rt, "bob");
  bob->kill(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  BOOST_REQUIRE(wait_events(*alice, "part", 1, std::chrono::seconds(5)));
  BOOST_TEST_MESSAGE(transport << ": SIGKILLed client seen after "
                               << std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::steady_clock::now() - t0)
                                      .count()
                               << " ms");
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)));
  const auto part = events(*alice, "part").at(0);
  BOOST_TEST(part["nick"] == "bob");
  BOOST_TEST(part["reason"] == "lost");
  // The nick is free again and the room goes on.
  auto bob2 = start_chat(rt, "bob");
  bob2->write("back\n");
  BOOST_REQUIRE(wait_events(*alice, "message", 1, std::chrono::seconds(5)));
  alice->close_stdin();
  bob2->close_stdin();
  alice->wait(std::chrono::seconds(10));
  bob2->wait(std::chrono::seconds(10));
  stop_and_check_clean(*chatd, rt, {alice->pid(), bob->pid(), bob2->pid()});
}

BOOST_DATA_TEST_CASE(killed_server_ends_clients_with_5_and_restarts_clean,
                     bdata::make(all_backends()), transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  auto bob = start_chat(rt, "bob");
  chatd->kill(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto* c : {alice.get(), bob.get()}) {
    BOOST_TEST(c->exit_code(std::chrono::seconds(5)) == 5);
    BOOST_TEST(c->err().find("server died") != std::string::npos);
    BOOST_TEST(events(*c, "disconnected").at(0)["reason"] == "server_gone");
  }
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)));
  chatd->wait(std::chrono::seconds(5));
  // A new server starts on the same instance without any manual step.
  auto again = start_chatd(rt, transport);
  auto carol = start_chat(rt, "carol");
  carol->write("after the crash\n");
  BOOST_REQUIRE(wait_events(*carol, "message", 1, std::chrono::seconds(5)));
  carol->close_stdin();
  BOOST_TEST(carol->exit_code(std::chrono::seconds(10)) == 0);
  stop_and_check_clean(*again, rt, {chatd->pid(), alice->pid(), bob->pid(), carol->pid()});
}

BOOST_DATA_TEST_CASE(cleanup_removes_what_a_killed_server_left, bdata::make(all_backends()),
                     transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  chatd->kill(SIGKILL);
  BOOST_REQUIRE(chatd->exit_code(std::chrono::seconds(10)) == 128 + SIGKILL);
  BOOST_REQUIRE(alice->wait(std::chrono::seconds(10)).has_value());
  // What the killed server left, each as the line --cleanup must print when it removes it: the
  // files in the instance dir but the lock (removed with the dir), the /dev/shm and SysV
  // objects, and last the dir itself. A FIFO may be named as one.
  const auto left = leftovers(rt, {chatd->pid(), alice->pid()});
  BOOST_REQUIRE_MESSAGE(!left.empty(), "a killed server left nothing to clean up");
  std::vector<std::vector<std::string>> expected;  // each: the lines that would name it
  for (const auto& l : left) {
    const std::filesystem::path path(l);
    if (l.starts_with("/dev/shm/")) {
      expected.push_back({"removed " + l});
    } else if (l.starts_with("SysV shm id ")) {
      expected.push_back({"removed SysV shm segment " + l.substr(12) + " ("});
    } else if (l.starts_with("SysV msg id ")) {
      expected.push_back({"removed SysV message queue id " + l.substr(12) + " ("});
    } else if (path.parent_path() == rt.dir() && path.filename() != "lock") {
      expected.push_back({"removed " + l, "removed FIFO " + l});
    } else if (path == rt.dir()) {
      expected.push_back({"removed " + l});
    }
  }
  std::vector<std::string> argv = {binary("chatd").string(), "--cleanup"};
  for (auto& a : rt.args()) argv.push_back(a);
  Process cleanup(argv);
  BOOST_TEST(cleanup.exit_code(std::chrono::seconds(10)) == 0);
  auto lines = cleanup.out_lines();
  BOOST_REQUIRE(!lines.empty());
  BOOST_TEST(lines.back() == "removed " + rt.dir().string());
  // Each object is named by exactly one line, and no line names anything else.
  for (const auto& names : expected) {
    const auto it = std::find_if(lines.begin(), lines.end(), [&](const std::string& line) {
      return std::any_of(names.begin(), names.end(), [&](const std::string& n) {
        return n.ends_with(" (") ? line.starts_with(n) : line == n;
      });
    });
    BOOST_CHECK_MESSAGE(it != lines.end(), "--cleanup did not name " << names.front() << ":\n"
                                                                     << cleanup.out());
    if (it != lines.end()) lines.erase(it);
  }
  BOOST_CHECK_MESSAGE(lines.empty(), "--cleanup named what was not there: "
                                         << (lines.empty() ? "" : lines.front()));
  check_no_leftovers(rt, {chatd->pid(), alice->pid()});
}

BOOST_DATA_TEST_CASE(sigterm_tells_clients_and_leaves_nothing, bdata::make(all_backends()),
                     transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  chatd->kill(SIGTERM);
  BOOST_TEST(alice->exit_code(std::chrono::seconds(5)) == 5);
  BOOST_TEST(events(*alice, "disconnected").at(0)["reason"] == "shutdown");
  stop_and_check_clean(*chatd, rt, {alice->pid()});
}

BOOST_DATA_TEST_CASE(a_second_server_on_the_instance_exits_3, bdata::make(all_backends()),
                     transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  std::vector<std::string> argv = {binary("chatd").string(), "--transport=" + transport};
  for (auto& a : rt.args()) argv.push_back(a);
  Process second(argv);
  BOOST_TEST(second.exit_code(std::chrono::seconds(10)) == 3);
  BOOST_TEST(second.err().find("already served") != std::string::npos);
  stop_and_check_clean(*chatd, rt, {second.pid()});
}

BOOST_AUTO_TEST_CASE(no_server_exits_3_and_says_how_to_start_one) {
  TempRuntime rt;
  auto c = start_chat(rt, "alice", {}, false);
  BOOST_TEST(c->exit_code(std::chrono::seconds(10)) == 3);
  BOOST_TEST(c->err().find("chatd --instance=" + rt.instance()) != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

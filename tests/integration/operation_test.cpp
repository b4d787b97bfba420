// Running chatd: its log lines at each level, `chatd --status`, and its help.
#define BOOST_TEST_MODULE operation
#include <signal.h>
#include <sys/stat.h>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <fstream>
#include <thread>

#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"

namespace bdata = boost::unit_test::data;
using namespace chat::test;
using nlohmann::json;

namespace {

std::size_t lines_with(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (const auto& line : lines_of(text)) n += line.find(needle) != std::string::npos;
  return n;
}

// Runs `chatd ARGS... --runtime-dir=... --instance=...` to completion.
std::unique_ptr<Process> chatd_command(const TempRuntime& rt, std::vector<std::string> args) {
  std::vector<std::string> argv = {binary("chatd").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  for (auto& a : rt.args()) argv.push_back(a);
  auto p = std::make_unique<Process>(argv);
  p->close_stdin();
  p->wait(10s);
  return p;
}

json status_of(const TempRuntime& rt) {
  auto p = chatd_command(rt, {"--status", "--json"});
  BOOST_REQUIRE_MESSAGE(p->exit_code(0s) == 0, "chatd --status failed: " << p->err());
  return json::parse(p->out());
}

const json* client_named(const json& status, const std::string& nick) {
  for (const auto& c : status["client_list"]) {
    if (c.value("nick", "") == nick) return &c;
  }
  return nullptr;
}

// Starts chatd through `/bin/sh -c 'umask MASK && exec chatd ARGS...'` and waits until it
// answers `chatd --status` (exec keeps the pid: the server is the returned process).
std::unique_ptr<Process> start_chatd_with(const TempRuntime& rt, const std::string& umask,
                                          std::vector<std::string> args) {
  std::vector<std::string> argv = {"/bin/sh", "-c", "umask " + umask + " && exec \"$0\" \"$@\"",
                                   binary("chatd").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  for (auto& a : rt.args()) argv.push_back(a);
  auto p = std::make_unique<Process>(argv);
  const auto end = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < end && p->running()) {
    if (std::filesystem::exists(rt.dir() / "status.sock") &&
        std::filesystem::exists(rt.dir() / "door.sock")) {
      auto st = chatd_command(rt, {"--status", "--json"});
      if (st->exit_code(0s) == 0) return p;
    }
    std::this_thread::sleep_for(20ms);
  }
  BOOST_FAIL("chatd did not start: " << p->err());
  return p;
}

// The permission bits of `p` (not following a symlink).
unsigned mode_of(const std::filesystem::path& p) {
  struct stat st {};
  BOOST_REQUIRE_MESSAGE(::lstat(p.c_str(), &st) == 0, p << ": " << std::strerror(errno));
  return st.st_mode & 07777;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(operation)

// The sockets anyone could knock on are the account's alone whatever umask chatd inherits.
BOOST_DATA_TEST_CASE(sockets_are_0600_even_with_umask_000, bdata::make(all_backends()), transport) {
  TempRuntime rt;
  auto chatd = start_chatd_with(rt, "000", {"--transport=" + transport});
  for (const char* name : {"status.sock", "door.sock"}) {
    const auto p = rt.dir() / name;
    struct stat st {};
    BOOST_REQUIRE_MESSAGE(::lstat(p.c_str(), &st) == 0, p << ": " << std::strerror(errno));
    BOOST_TEST(S_ISSOCK(st.st_mode), name);
    BOOST_TEST(mode_of(p) == 0600u, name << std::oct << ": mode " << mode_of(p));
    BOOST_TEST(st.st_uid == ::geteuid(), name);
  }
  stop_and_check_clean(*chatd, rt, {});
}

// SIGINT (Ctrl+C on a foreground chatd) is a clean shutdown like SIGTERM.
BOOST_DATA_TEST_CASE(sigint_shuts_down_cleanly, bdata::make(all_backends()), transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  chatd->kill(SIGINT);
  BOOST_TEST(chatd->exit_code(10s) == 0, chatd->err());
  BOOST_TEST(alice->exit_code(10s) == 5, alice->err());
  const auto gone = events(*alice, "disconnected");
  BOOST_REQUIRE_EQUAL(gone.size(), 1u);
  BOOST_TEST(gone[0]["reason"] == "shutdown");
  check_no_leftovers(rt, {chatd->pid(), alice->pid()});
}

// What --config=FILE says is what the server runs with: its transport, history and
// max-clients are those of the file (none of them is on the command line).
BOOST_AUTO_TEST_CASE(config_file_is_applied) {
  TempRuntime rt;
  const auto conf = rt.base() / "chatd.conf";
  {
    std::ofstream out(conf);
    out << "# a test's\ntransport = fifo\nhistory = 7\nmax-clients = 3\n"
        << "client-queue-bytes = 300000\n";
  }
  auto chatd = start_chatd_with(rt, "077", {"--config=" + conf.string()});
  const json s = status_of(rt);
  BOOST_TEST(s.value("transport", "") == "fifo", s.dump());
  BOOST_TEST(s.value("history", 0) == 7, s.dump());
  BOOST_TEST(s.value("max_clients", 0) == 3, s.dump());
  BOOST_TEST(s.value("client_queue_bytes", 0) == 300000, s.dump());
  // And it acts on them: a fourth client is refused.
  std::vector<std::unique_ptr<Process>> in;
  std::vector<pid_t> pids;
  for (const char* nick : {"a", "b", "c"}) {
    in.push_back(start_chat(rt, nick));
    pids.push_back(in.back()->pid());
  }
  auto d = start_chat(rt, "d", {}, false);
  pids.push_back(d->pid());
  BOOST_TEST(d->exit_code(20s) == 1, d->err());
  BOOST_TEST(d->err().find("server_full") != std::string::npos, d->err());
  for (auto& c : in) {
    c->close_stdin();
    BOOST_TEST(c->exit_code(10s) == 0, c->err());
  }
  std::filesystem::remove(conf);
  stop_and_check_clean(*chatd, rt, pids);
}

// A client that insists on a transport the server does not use is a usage error (exit 2) and
// never joins.
BOOST_DATA_TEST_CASE(chat_with_another_transport_exits_2, bdata::make(all_backends()), transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  const std::string other = transport == "uds" ? "fifo" : "uds";
  auto c = start_chat(rt, "bob", {"--transport=" + other}, false);
  BOOST_TEST(c->exit_code(20s) == 2, c->err());
  BOOST_TEST(c->err().find("does not match") != std::string::npos, c->err());
  BOOST_TEST(count_events(c->out(), "welcome") == 0u);
  // Alice, who was there first, sees nobody come: her next message is the only event after.
  alice->write("alone\n");
  BOOST_REQUIRE(wait_events(*alice, "message", 1, 20s));
  BOOST_TEST(events(*alice, "join").size() == 1u);  // her own
  alice->close_stdin();
  BOOST_TEST(alice->exit_code(10s) == 0);
  stop_and_check_clean(*chatd, rt, {alice->pid(), c->pid()});
}

BOOST_DATA_TEST_CASE(default_log_level_is_one_line_per_client_event_and_none_per_message,
                     bdata::make(all_backends()), transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  auto bob = start_chat(rt, "bob");
  auto carol = start_chat(rt, "carol");
  std::string lines;
  for (int i = 0; i < 100; ++i) lines += "message number " + std::to_string(i) + "\n";
  alice->write(lines + "/nick alicia\n/join dev\n/me waves\n/msg bob psst\n/who\n/rooms\n");
  BOOST_REQUIRE(wait_events(*bob, "private", 1, 10s));
  bob->close_stdin();
  BOOST_TEST(bob->exit_code(10s) == 0);
  carol->kill(SIGKILL);
  BOOST_REQUIRE(wait_events(*alice, "part", 2, 5s));
  // A client that breaks the protocol: raw transport frames that are no protocol message.
  Process rogue({binary("transport_peer").string(), "client", transport, rt.base().string(),
                 rt.instance(), "send", "1"});
  BOOST_REQUIRE_MESSAGE(chatd->wait_err_contains("malformed", 5s), chatd->err());
  alice->close_stdin();
  BOOST_TEST(alice->exit_code(10s) == 0);
  stop_and_check_clean(*chatd, rt, {alice->pid(), bob->pid(), carol->pid(), rogue.pid()});

  const std::string log = chatd->err();
  BOOST_TEST_MESSAGE(transport << " log:\n" << log);
  BOOST_TEST(lines_with(log, "joined the server") == 3u, log);
  BOOST_TEST(lines_with(log, "nick bob) quit") == 1u, log);
  BOOST_TEST(lines_with(log, "nick alicia) quit") == 1u, log);
  BOOST_TEST(lines_with(log, "nick carol) died without saying goodbye") +
                     lines_with(log, "nick carol) hung up without saying goodbye") ==
                 1u,
             log);
  BOOST_TEST(lines_with(log, "malformed") == 1u, log);
  BOOST_TEST(lines_with(log, "message number") == 0u, log);
  BOOST_TEST(lines_with(log, "psst") == 0u, log);
  // serving, 3 joins, 1 rename, 2 quits, 1 death, 1 malformed, the signal, shut down: give
  // the transport a little room for its own warnings, but nowhere near one per message.
  BOOST_TEST(lines_of(log).size() <= 14u, log);
}

BOOST_AUTO_TEST_CASE(log_level_warn_keeps_only_trouble_and_debug_adds_detail) {
  TempRuntime rt;
  auto quiet = start_chatd(rt, "uds", {"--log-level=warn"});
  auto alice = start_chat(rt, "alice");
  Process rogue({binary("transport_peer").string(), "client", "uds", rt.base().string(),
                 rt.instance(), "send", "1"});
  BOOST_REQUIRE(quiet->wait_err_contains("malformed", 5s));
  alice->close_stdin();
  BOOST_TEST(alice->exit_code(10s) == 0);
  stop_and_check_clean(*quiet, rt, {alice->pid(), rogue.pid()});
  BOOST_TEST(lines_with(quiet->err(), "joined the server") == 0u, quiet->err());
  BOOST_TEST(lines_of(quiet->err()).size() == 1u, quiet->err());

  auto chatty = start_chatd(rt, "uds", {"--log-level=debug"});
  auto bob = start_chat(rt, "bob");
  bob->close_stdin();
  BOOST_TEST(bob->exit_code(10s) == 0);
  stop_and_check_clean(*chatty, rt, {bob->pid()});
  BOOST_TEST(lines_with(chatty->err(), " debug: ") >= 1u, chatty->err());
  BOOST_TEST(lines_with(chatty->err(), "connected") >= 1u, chatty->err());
}

BOOST_DATA_TEST_CASE(status_shows_clients_rooms_and_messages, bdata::make(all_backends()),
                     transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport, {"--history=50"});
  auto alice = start_chat(rt, "alice");
  auto bob = start_chat(rt, "bob");
  alice->write("/join dev\none\ntwo\nthree\n");
  bob->write("four\nfive\n");
  BOOST_REQUIRE(wait_events(*alice, "message", 5, 5s));
  BOOST_REQUIRE(wait_events(*bob, "message", 2, 5s));

  const json s = status_of(rt);
  BOOST_TEST(s.value("transport", "") == transport);
  BOOST_TEST(s.value("instance", "") == rt.instance());
  BOOST_TEST(s.value("pid", 0) == chatd->pid());
  BOOST_TEST(s.value("clients", 0) == 2);
  BOOST_TEST(s.value("rooms", 0) == 2);
  BOOST_TEST(s.value("messages", 0) == 5);
  BOOST_TEST(s.value("history", 0) == 50);
  // Both clients have everything the server sent them: nothing waits anywhere.
  BOOST_TEST(s.value("queued_bytes", -1) == 0, s.dump());
  BOOST_TEST(s.value("transport_bytes", -1) == 0, s.dump());
  BOOST_REQUIRE_EQUAL(s["room_list"].size(), 2u);
  BOOST_TEST(s["room_list"][0].value("name", "") == "dev");
  BOOST_TEST(s["room_list"][0].value("members", 0) == 1);
  BOOST_TEST(s["room_list"][0].value("history", 0) == 3);
  BOOST_TEST(s["room_list"][1].value("name", "") == "lobby");
  BOOST_TEST(s["room_list"][1].value("members", 0) == 2);
  const json* a = client_named(s, "alice");
  BOOST_REQUIRE(a != nullptr);
  BOOST_TEST(a->value("pid", 0) == alice->pid());
  BOOST_TEST((*a)["rooms"] == json::parse(R"(["dev","lobby"])"));
  BOOST_TEST(a->value("queued_bytes", -1) == 0, s.dump());
  BOOST_TEST(a->value("queued_frames", -1) == 0, s.dump());
  BOOST_REQUIRE(client_named(s, "bob") != nullptr);
  BOOST_TEST(client_named(s, "bob")->value("queued_bytes", -1) == 0, s.dump());
  BOOST_TEST(client_named(s, "bob")->value("queued_frames", -1) == 0, s.dump());

  // The same for people.
  auto text = chatd_command(rt, {"--status"});
  BOOST_TEST(text->exit_code(0s) == 0);
  const std::string out = text->out();
  for (const std::string& needle :
       {"transport " + transport, std::string("clients 2/256"), std::string("messages 5"),
        std::string("alice"), std::string("bob"), std::string("dev,lobby")}) {
    BOOST_TEST(out.find(needle) != std::string::npos, "no '" << needle << "' in:\n" << out);
  }
  alice->close_stdin();
  bob->close_stdin();
  BOOST_TEST(alice->exit_code(10s) == 0);
  BOOST_TEST(bob->exit_code(10s) == 0);
  stop_and_check_clean(*chatd, rt, {alice->pid(), bob->pid()});
}

BOOST_DATA_TEST_CASE(status_shows_the_backlog_of_a_stopped_client, bdata::make(all_backends()),
                     transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  auto bob = start_chat(rt, "bob");
  BOOST_REQUIRE(wait_events(*alice, "join", 2, 5s));
  bob->kill(SIGSTOP);
  // About 480 KB: more than any transport buffers (256 KiB at most), less than the 1 MiB
  // after which bob would be evicted.
  const std::string text(3900, 'x');
  std::string lines;
  for (int i = 0; i < 120; ++i) lines += text + "\n";
  alice->write(lines);
  BOOST_REQUIRE(wait_events(*alice, "message", 120, 20s));
  const json held = status_of(rt);
  const json* b = client_named(held, "bob");
  BOOST_REQUIRE(b != nullptr);
  BOOST_TEST(b->value("queued_bytes", 0) > 0, held.dump());
  BOOST_TEST(b->value("queued_frames", 0) > 0);
  BOOST_TEST(b->value("blocked", false));
  // The transport's own buffers toward bob are full: at least one maximal frame waits there.
  BOOST_TEST(b->value("transport_bytes", 0) >= 3900, held.dump());
  // Alice has taken everything sent to her: the totals are bob's.
  BOOST_TEST(held.value("transport_bytes", -1) == b->value("transport_bytes", 0), held.dump());
  BOOST_TEST(held.value("queued_bytes", -1) == b->value("queued_bytes", 0), held.dump());
  BOOST_TEST(client_named(held, "alice")->value("queued_bytes", -1) == 0);

  bob->kill(SIGCONT);
  BOOST_REQUIRE(wait_events(*bob, "message", 120, 20s));
  const json drained = status_of(rt);
  BOOST_TEST(client_named(drained, "bob")->value("queued_bytes", -1) == 0, drained.dump());
  BOOST_TEST(client_named(drained, "bob")->value("transport_bytes", -1) == 0, drained.dump());
  alice->close_stdin();
  bob->close_stdin();
  BOOST_TEST(alice->exit_code(10s) == 0);
  BOOST_TEST(bob->exit_code(10s) == 0);
  stop_and_check_clean(*chatd, rt, {alice->pid(), bob->pid()});
}

BOOST_AUTO_TEST_CASE(status_without_a_server_fails_clearly_even_after_a_crash) {
  TempRuntime rt;
  auto none = chatd_command(rt, {"--status"});
  BOOST_TEST(none->exit_code(0s) == 1);
  BOOST_TEST(none->err().find("no chatd is running for instance '" + rt.instance() + "'") !=
                 std::string::npos,
             none->err());

  // A killed server leaves its status socket; nobody answers on it, and the next server
  // replaces it.
  auto chatd = start_chatd(rt, "uds");
  chatd->kill(SIGKILL);
  chatd->wait(5s);
  BOOST_TEST(std::filesystem::exists(rt.dir() / "status.sock"));
  auto stale = chatd_command(rt, {"--status"});
  BOOST_TEST(stale->exit_code(0s) == 1);
  BOOST_TEST(stale->err().find("no chatd is running") != std::string::npos, stale->err());
  auto again = start_chatd(rt, "uds");
  BOOST_TEST(status_of(rt).value("clients", -1) == 0);
  stop_and_check_clean(*again, rt, {chatd->pid()});
}

// Found by config_fuzz: an option value like "%value%" made Boost's error message loop
// forever; chatd and chat hung instead of exiting 2.
BOOST_AUTO_TEST_CASE(placeholder_like_option_values_are_plain_usage_errors) {
  Process chatd({binary("chatd").string(), "--workers=%value%"});
  BOOST_TEST(chatd.exit_code(5s) == 2);
  BOOST_TEST(chatd.err().find("--workers") != std::string::npos);
  Process chat({binary("chat").string(), "-n", "a", "--%canonical_option%"});
  BOOST_TEST(chat.exit_code(5s) == 2);
}

BOOST_AUTO_TEST_CASE(help_lists_every_option) {
  Process help({binary("chatd").string(), "--help"});
  BOOST_TEST(help.exit_code(10s) == 0);
  for (const char* option :
       {"--transport", "--instance", "--config", "--workers", "--history", "--max-clients",
        "--client-queue-bytes", "--runtime-dir", "--log-level", "--cleanup", "--status", "--json",
        "--help", "--version"}) {
    BOOST_TEST(help.out().find(option) != std::string::npos, "--help does not mention " << option);
  }
  Process misuse({binary("chatd").string(), "--json"});
  BOOST_TEST(misuse.exit_code(10s) == 2);
  BOOST_TEST(misuse.err().find("--json") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

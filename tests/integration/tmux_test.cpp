// The terminal client in a real terminal: `chat` runs inside a detached tmux session with a
// socket of its own; the test types with send-keys and reads the screen with capture-pane.
#define BOOST_TEST_MODULE tmux
#include <signal.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <fstream>
#include <random>
#include <sstream>

#include "common/instance.hpp"
#include "common/protocol.hpp"
#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"

using namespace chat::test;
namespace proto = chat::protocol;

namespace {

// tmux from $PATH, or empty.
std::string find_tmux() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/tmux";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The last non-blank line of `screen`: where readline's prompt and input line is.
std::string last_line(const std::string& screen) {
  std::string last;
  for (const auto& line : lines_of(screen)) {
    if (line.find_first_not_of(' ') != std::string::npos) last = line;
  }
  return last;
}

std::size_t occurrences(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1))
    ++n;
  return n;
}

// One tmux server (its own socket, so no other tmux is touched) running `chat ARGS` in a
// detached 120x30 session. chat runs under a small sh that prints "[chat exited N]" when it
// ends: tmux's own pane_dead_status is unreliable here (tmux can miss the SIGCHLD while its
// utempter helper runs, and then never reaps the pane). The shell traps the signals the
// terminal sends its process group, so it waits for chat's own exit. The destructor kills
// that tmux server and removes its socket.
class Tmux {
 public:
  explicit Tmux(const std::vector<std::string>& chat_args) : tmux_(find_tmux()) {
    BOOST_REQUIRE_MESSAGE(!tmux_.empty(),
                          "tmux is not installed (scripts/install-deps.sh installs it); the "
                          "terminal client cannot be tested without it");
    std::random_device rd;
    socket_ = "ipchat-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd() % 1000000);
    // INPUTRC=/dev/null keeps the user's readline settings out of the test.
    std::string script = "trap : INT TERM HUP; env INPUTRC=/dev/null";
    for (const auto& a : chat_args) script += " " + quote(a);
    // Then whether the terminal got its line editing and echo back.
    script +=
        "; echo \"[chat exited $?]\"; echo \"[tty $(stty -a | tr ' ;' '\\n\\n' | "
        "grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' ')]\"";
    // With several arguments tmux executes the command directly, not through $SHELL.
    const auto r =
        run({"-f", "/dev/null", "set-option", "-g", "remain-on-exit", "on", ";", "new-session",
             "-d", "-x", "120", "-y", "30", "-s", "chat", "/bin/sh", "-c", script});
    BOOST_REQUIRE_MESSAGE(r.first == 0, "tmux new-session failed: " << r.second);
    started_ = true;
    socket_path_ = display("#{socket_path}");
    shell_pid_ = std::stoi(display("#{pane_pid}"));
  }

  ~Tmux() {
    if (!started_) return;
    run({"kill-server"});
    // tmux leaves the socket file behind.
    if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
  }

  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;

  // chat's pid (the shell's only child), or -1 once it has ended.
  pid_t chat_pid() const {
    const std::string id = std::to_string(shell_pid_);
    std::ifstream in("/proc/" + id + "/task/" + id + "/children");
    pid_t pid = -1;
    in >> pid;
    return pid;
  }

  // Types `text` literally.
  void type(const std::string& text) { run({"send-keys", "-t", "chat", "-l", text}); }
  // Presses keys by tmux name: "Enter", "C-d", "C-c".
  void press(const std::string& key) { run({"send-keys", "-t", "chat", key}); }
  // Types `text` and presses `key` at once, before chat can have read the text.
  void type_and_press(const std::string& text, const std::string& key) {
    run({"send-keys", "-t", "chat", "-l", text, ";", "send-keys", "-t", "chat", key});
  }

  std::string screen() { return run({"capture-pane", "-p", "-t", "chat"}).second; }

  // Waits until the screen satisfies `pred`; false (and the screen in the log) on timeout.
  bool wait_screen(const std::function<bool(const std::string&)>& pred,
                   std::chrono::milliseconds timeout = 5s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const std::string s = screen();
      if (pred(s)) return true;
      if (std::chrono::steady_clock::now() >= end) {
        BOOST_TEST_MESSAGE("screen:\n" << s);
        return false;
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout = 5s) {
    return wait_screen([&](const std::string& s) { return s.find(text) != std::string::npos; },
                       timeout);
  }
  bool wait_prompt(const std::string& line) {
    return wait_screen([&](const std::string& s) { return last_line(s) == line; });
  }

  // chat's exit status once it has ended; -1 on timeout.
  int exit_status(std::chrono::milliseconds timeout = 5s) {
    static const std::string kMark = "[chat exited ";
    std::string s;
    if (!wait_screen(
            [&](const std::string& screen) {
              return (s = screen).find(kMark) != std::string::npos;
            },
            timeout)) {
      return -1;
    }
    return std::stoi(s.substr(s.find(kMark) + kMark.size()));
  }

  std::string display(const std::string& format) {
    std::string out = run({"display-message", "-p", "-t", "chat", format}).second;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

 private:
  std::pair<int, std::string> run(std::vector<std::string> args) {
    std::vector<std::string> argv = {tmux_, "-L", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    Process p(argv);
    p.close_stdin();
    const int code = p.exit_code(10s);
    return {code, p.out() + p.err()};
  }

  std::string tmux_;
  std::string socket_;
  std::string socket_path_;
  bool started_ = false;
  pid_t shell_pid_ = -1;
};

// `chat -n NICK` on `rt`.
std::vector<std::string> chat_args(const TempRuntime& rt, const std::string& nick) {
  std::vector<std::string> argv = {binary("chat").string(), "-n", nick};
  for (const auto& a : rt.args()) argv.push_back(a);
  return argv;
}

// A stand-in for chatd that sends what the real one refuses to pass on: text with control
// bytes in it, as a broken or hostile server could. It speaks the protocol over `uds`.
class HostileServer {
 public:
  explicit HostileServer(const TempRuntime& rt)
      : dir_(chat::InstanceDir::acquire(rt.base(), rt.instance())) {
    chat::transport::ListenOptions lo;
    lo.dir = dir_.path();
    lo.instance = rt.instance();
    lo.max_clients = 4;
    endpoint_ = chat::transport::find_backend("uds")->listen(lo);
    chat::InstanceInfo info;
    info.instance = rt.instance();
    info.transport = "uds";
    info.pid = ::getpid();
    info.protocol = proto::kVersion;
    info.objects = endpoint_->objects();
    dir_.publish(info);
  }

  ~HostileServer() {
    endpoint_.reset();
    dir_.remove();
  }

  // Waits for a client's hello and welcomes it into `room`; returns false on timeout.
  bool welcome(const std::string& room) {
    const auto hello = next_message(5s);
    if (!hello || !std::holds_alternative<proto::Hello>(*hello)) return false;
    const auto& h = std::get<proto::Hello>(*hello);
    send(proto::Welcome{h.nick, room});
    send(proto::Joined{room, h.nick, ++seq_, chat::now_unix_ms(), 0});
    return true;
  }

  void say(const std::string& room, const std::string& from, const std::string& text) {
    proto::RoomMessage m;
    m.room = room;
    m.from = from;
    m.text = text;
    m.seq = ++seq_;
    m.time_ms = chat::now_unix_ms();
    send(m);
  }

  void rename(const std::string& from, const std::string& to) {
    send(proto::NickChanged{from, to, "lobby", ++seq_, chat::now_unix_ms()});
  }

  // Waits for the client's Quit and closes the connection, as chatd does.
  bool goodbye() {
    for (;;) {
      const auto m = next_message(5s);
      if (!m) return false;
      if (std::holds_alternative<proto::Quit>(*m)) {
        endpoint_->close(client_);
        return true;
      }
    }
  }

 private:
  std::optional<proto::Message> next_message(std::chrono::milliseconds timeout) {
    const auto end = chat::deadline_after(timeout);
    while (chat::Clock::now() < end) {
      if (!pending_.empty()) {
        auto ev = std::move(pending_.front());
        pending_.erase(pending_.begin());
        if (ev.kind == chat::transport::ServerEvent::Kind::kConnected) client_ = ev.client;
        if (ev.kind != chat::transport::ServerEvent::Kind::kFrame) continue;
        auto d = proto::decode(ev.frame);
        if (d.message) return d.message;
        continue;
      }
      endpoint_->poll(pending_, end);
    }
    return std::nullopt;
  }

  void send(const proto::Message& m) {
    const auto frame = proto::encode(m);
    BOOST_REQUIRE(endpoint_->send(client_, frame) == chat::transport::SendResult::kSent);
  }

  chat::InstanceDir dir_;
  std::unique_ptr<chat::transport::ServerEndpoint> endpoint_;
  std::vector<chat::transport::ServerEvent> pending_;
  chat::transport::ClientId client_ = 0;
  std::uint64_t seq_ = 0;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(terminal)

BOOST_AUTO_TEST_CASE(typed_text_survives_incoming_messages) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, "cond");
  Tmux term(chat_args(rt, "alice"));
  BOOST_REQUIRE(term.wait_for("welcome, alice"));
  BOOST_REQUIRE(term.wait_prompt("[alice@lobby]>"));
  const pid_t alice = term.chat_pid();

  // Enter sends; the line comes back as the server's echo, shown once, and the input is empty.
  term.type("hello from the terminal");
  term.press("Enter");
  BOOST_REQUIRE(term.wait_for("<alice> hello from the terminal"));
  BOOST_TEST(term.wait_prompt("[alice@lobby]>"));
  BOOST_TEST(occurrences(term.screen(), "hello from the terminal") == 1u);

  // Half-way through a line, others talk: their lines appear above, the typing stays.
  term.type("half-way thr");
  BOOST_REQUIRE(term.wait_prompt("[alice@lobby]> half-way thr"));
  auto bob = start_chat(rt, "bob");
  bob->write("interrupting message\n");
  BOOST_REQUIRE(term.wait_for("<bob> interrupting message"));
  const std::string during = term.screen();
  BOOST_TEST(last_line(during) == "[alice@lobby]> half-way thr", during);
  BOOST_TEST(during.find("-- bob joined #lobby") != std::string::npos, during);
  term.type("ough typing");
  term.press("Enter");
  BOOST_REQUIRE(wait_events(*bob, "message", 3, 5s));
  BOOST_TEST(events(*bob, "message").back().value("text", "") == "half-way through typing");
  BOOST_TEST(events(*bob, "message").back().value("from", "") == "alice");

  // An escape sequence from another client never reaches the screen: chat refuses to send
  // it, chatd would refuse it too, and the screen is not cleared.
  bob->write("\x1b[2J\x1b[Hcleared?\nafter the escape\n");
  BOOST_REQUIRE(term.wait_for("<bob> after the escape"));
  const std::string after = term.screen();
  BOOST_TEST(after.find("welcome, alice") != std::string::npos, after);
  BOOST_TEST(after.find("cleared?") == std::string::npos, after);
  BOOST_TEST(events(*bob, "error").at(0).value("code", "") == "bad_text");

  // The prompt follows the current room.
  term.type("/join dev");
  term.press("Enter");
  BOOST_TEST(term.wait_prompt("[alice@dev]>"));

  // Ctrl+D on an empty line leaves: the room sees a quit, chat exits 0, the terminal is
  // restored.
  term.press("C-d");
  BOOST_TEST(term.exit_status() == 0);
  BOOST_TEST(term.wait_for("[tty icanon echo ]"));
  BOOST_REQUIRE(wait_events(*bob, "part", 1, 5s));
  BOOST_TEST(events(*bob, "part").at(0).value("reason", "") == "quit");
  bob->close_stdin();
  BOOST_TEST(bob->exit_code(10s) == 0);
  stop_and_check_clean(*chatd, rt, {bob->pid(), alice});
}

BOOST_AUTO_TEST_CASE(ctrl_c_leaves_cleanly) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, "uds");
  auto bob = start_chat(rt, "bob");
  Tmux term(chat_args(rt, "alice"));
  BOOST_REQUIRE(term.wait_prompt("[alice@lobby]>"));
  const pid_t alice = term.chat_pid();
  // Ctrl+C right behind a long line of typing: chat must not be left in a read of input the
  // terminal discarded at the interrupt.
  term.type_and_press("never sent " + std::string(500, 'x'), "C-c");
  BOOST_TEST(term.exit_status() == 0);
  BOOST_TEST(term.wait_for("[tty icanon echo ]"));
  BOOST_REQUIRE(wait_events(*bob, "part", 1, 5s));
  BOOST_TEST(events(*bob, "part").at(0).value("nick", "") == "alice");
  BOOST_TEST(events(*bob, "part").at(0).value("reason", "") == "quit");
  BOOST_TEST(events(*bob, "message").empty());
  bob->close_stdin();
  BOOST_TEST(bob->exit_code(10s) == 0);
  stop_and_check_clean(*chatd, rt, {bob->pid(), alice});
}

BOOST_AUTO_TEST_CASE(a_dead_server_ends_the_client_with_5_and_a_clear_message) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, "cond");
  Tmux term(chat_args(rt, "alice"));
  BOOST_REQUIRE(term.wait_prompt("[alice@lobby]>"));
  const pid_t alice = term.chat_pid();
  term.type("half a line");
  chatd->kill(SIGKILL);
  BOOST_TEST(term.exit_status() == 5);
  const std::string s = term.screen();
  BOOST_TEST(s.find("connection lost: the server died") != std::string::npos, s);
  chatd->wait(5s);
  // What the killed server left is cleaned up by --cleanup, as after any crash.
  std::vector<std::string> argv = {binary("chatd").string(), "--cleanup"};
  for (auto& a : rt.args()) argv.push_back(a);
  Process cleanup(argv);
  BOOST_TEST(cleanup.exit_code(10s) == 0);
  check_no_leftovers(rt, {chatd->pid(), alice});
}

BOOST_AUTO_TEST_CASE(control_bytes_from_a_hostile_server_show_harmlessly) {
  TempRuntime rt;
  std::optional<HostileServer> server_holder;
  server_holder.emplace(rt);
  HostileServer& server = *server_holder;
  Tmux term(chat_args(rt, "alice"));
  BOOST_REQUIRE(server.welcome("lobby"));
  BOOST_REQUIRE(term.wait_prompt("[alice@lobby]>"));
  const pid_t alice = term.chat_pid();
  server.say("lobby", "mallory", "before");
  BOOST_REQUIRE(term.wait_for("<mallory> before"));
  const std::string title = term.display("#{pane_title}");
  // Clear screen, cursor home, set the window title, red text, a C1 CSI, and a nick that
  // tries the same.
  server.say("lobby", "mal\x1b[2Jlory",
             "\x1b[2J\x1b[Hevil \x1b]2;pwned\x07 \x1b[31mred \xc2\x9b"
             "2J end");
  BOOST_REQUIRE(term.wait_for(" end"));
  const std::string s = term.screen();
  BOOST_TEST(s.find("welcome, alice") != std::string::npos, s);  // not cleared
  BOOST_TEST(s.find("<mallory> before") != std::string::npos, s);
  BOOST_TEST(s.find("^[[2J^[[Hevil ^[]2;pwned^G ^[[31mred") != std::string::npos, s);
  BOOST_TEST(s.find("mal^[[2Jlory") != std::string::npos, s);
  BOOST_TEST(term.display("#{pane_title}") == title);
  BOOST_TEST(last_line(s) == "[alice@lobby]>", s);
  // The prompt shows the nick the server gives, neutralised too.
  server.rename("alice", "al\x1b[2Jice");
  BOOST_TEST(term.wait_prompt("[al^[[2Jice@lobby]>"));
  term.press("C-d");
  BOOST_TEST(server.goodbye());
  BOOST_TEST(term.exit_status() == 0);
  server_holder.reset();
  check_no_leftovers(rt, {alice});
}

BOOST_AUTO_TEST_SUITE_END()

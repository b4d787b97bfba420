// chatd under a service manager, with the test in systemd's place: it binds the NOTIFY_SOCKET
// chatd reports to, sets $RUNTIME_DIRECTORY, and connects chatd's stderr as the journal would.
#define BOOST_TEST_MODULE service
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "common/instance.hpp"
#include "common/log.hpp"
#include "common/os.hpp"
#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"

namespace bdata = boost::unit_test::data;
namespace fs = std::filesystem;
using namespace chat::test;

namespace {

// Generous: a loaded machine (sanitizers, parallel ctest) starts chatd slowly.
constexpr auto kNotifyWait = 30s;

// A temporary directory of the test's own, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ipchat-svc-test.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The service manager's end of sd_notify(3): a Unix datagram socket in a temporary dir.
class NotifySocket {
 public:
  NotifySocket() : path_(dir_.path() / "notify") {
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd_) throw std::runtime_error("socket(AF_UNIX, SOCK_DGRAM) failed");
    const auto addr = chat::unix_address(path_);
    if (::bind(fd_.get(), addr.get(), addr.length) != 0) {
      throw std::runtime_error("bind " + path_.string() + " failed");
    }
  }
  std::string path() const { return path_.string(); }

  // Every datagram until one holds the line `line` ("READY=1"); the datagrams received, or
  // nullopt if none held it within `timeout`. Each datagram is one string of lines.
  std::optional<std::vector<std::string>> wait_for(const std::string& line,
                                                   std::chrono::milliseconds timeout) {
    std::vector<std::string> got;
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n <= 0) continue;
      got.emplace_back(buf, static_cast<std::size_t>(n));
      for (const auto& l : lines_of(got.back())) {
        if (l == line) return got;
      }
    }
  }

  // A datagram already waiting, if any.
  std::optional<std::string> pending() {
    char buf[4096];
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return std::nullopt;
    return std::string(buf, static_cast<std::size_t>(n));
  }

 private:
  TempDir dir_;
  fs::path path_;
  chat::UniqueFd fd_;
};

bool has_line(const std::vector<std::string>& datagrams, const std::string& prefix) {
  for (const auto& d : datagrams) {
    for (const auto& l : lines_of(d)) {
      if (l.rfind(prefix, 0) == 0) return true;
    }
  }
  return false;
}

std::vector<std::string> chatd_argv(const std::string& transport, std::vector<std::string> args) {
  std::vector<std::string> argv = {binary("chatd").string(), "--transport=" + transport};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// Waits until the chatd `p` serves `instance` in `base`; false if it exits or 10 s pass.
bool wait_serving(Process& p, const fs::path& base, const std::string& instance) {
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < end && p.running()) {
    try {
      const auto live = chat::find_live_instance(base, instance);
      if (live && live->pid == p.pid()) return true;
    } catch (const std::exception&) {
      // not there yet
    }
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

}  // namespace

// "<N>" with N one of the priorities chatd uses (3 error, 4 warning, 6 info, 7 debug), then
// the message. (No std::regex: GCC 12's <regex> trips -Wmaybe-uninitialized at -O1.)
bool has_priority_prefix(const std::string& l) {
  return l.size() > 3 && l[0] == '<' && std::string_view("3467").find(l[1]) != std::string::npos &&
         l[2] == '>' && l[3] != '<';
}

// Starts with an RFC 3339 date: "YYYY-MM-DDT".
bool has_timestamp(const std::string& l) {
  if (l.size() < 11) return false;
  for (std::size_t i : {0u, 1u, 2u, 3u, 5u, 6u, 8u, 9u}) {
    if (!std::isdigit(static_cast<unsigned char>(l[i]))) return false;
  }
  return l[4] == '-' && l[7] == '-' && l[10] == 'T';
}

BOOST_AUTO_TEST_SUITE(notify)

// READY=1 comes once a client can connect (the test connects right then, without looking
// for instance.json itself); STOPPING=1 once SIGTERM begins the shutdown; chatd then exits 0
// and leaves nothing behind.
BOOST_DATA_TEST_CASE(ready_then_stopping, bdata::make(all_backends()), backend) {
  TempRuntime rt;
  NotifySocket notify;
  std::vector<std::string> args = rt.args();
  Process chatd(chatd_argv(backend, args), {{"NOTIFY_SOCKET", notify.path()}});
  const auto ready = notify.wait_for("READY=1", kNotifyWait);
  BOOST_REQUIRE_MESSAGE(ready, "no READY=1 from chatd: " << chatd.err());
  BOOST_CHECK(has_line(*ready, "STATUS=serving instance '" + rt.instance() + "' over " + backend));
  BOOST_CHECK(!has_line(*ready, "STOPPING=1"));

  auto client = start_chat(rt, "alice");
  BOOST_CHECK(chatd.running());

  chatd.kill(SIGTERM);
  const auto stopping = notify.wait_for("STOPPING=1", kNotifyWait);
  BOOST_CHECK_MESSAGE(stopping, "no STOPPING=1 from chatd: " << chatd.err());
  BOOST_CHECK_MESSAGE(chatd.exit_code(10s) == 0, "chatd did not exit 0: " << chatd.err());
  BOOST_CHECK(!notify.pending());  // nothing after STOPPING=1, READY=1 least of all
  BOOST_CHECK_MESSAGE(client->wait(10s).has_value(), "the client outlived the server");
  check_no_leftovers(rt, {chatd.pid(), client->pid()});
}

// Without NOTIFY_SOCKET chatd notifies nobody and serves as always; with one that nobody
// listens on any more, it serves all the same (a failed notification is not an error).
BOOST_AUTO_TEST_CASE(notify_socket_gone) {
  TempRuntime rt;
  std::string gone;
  {
    NotifySocket notify;
    gone = notify.path();
  }
  Process chatd(chatd_argv("uds", rt.args()), {{"NOTIFY_SOCKET", gone}});
  BOOST_REQUIRE_MESSAGE(wait_serving(chatd, rt.base(), rt.instance()), chatd.err());
  auto client = start_chat(rt, "bob");
  stop_and_check_clean(chatd, rt, {client->pid()}, 10s);
  client->wait(10s);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(runtime_directory)

// $RUNTIME_DIRECTORY (its first entry when systemd lists several) is the base when
// --runtime-dir is not given; $XDG_RUNTIME_DIR is then not used.
BOOST_AUTO_TEST_CASE(is_the_default_base) {
  TempRuntime rt;
  TempDir xdg;
  Process chatd(chatd_argv("cond", {"--instance=" + rt.instance()}),
                {{"RUNTIME_DIRECTORY", rt.base().string() + ":" + (xdg.path() / "other").string()},
                 {"XDG_RUNTIME_DIR", xdg.path().string()}});
  BOOST_REQUIRE_MESSAGE(wait_serving(chatd, rt.base(), rt.instance()), chatd.err());
  BOOST_CHECK(fs::is_empty(xdg.path()));
  auto client = start_chat(rt, "carol");
  stop_and_check_clean(chatd, rt, {client->pid()}, 10s);
  client->wait(10s);
}

// An explicit --runtime-dir wins over $RUNTIME_DIRECTORY.
BOOST_AUTO_TEST_CASE(runtime_dir_option_wins) {
  TempRuntime rt;
  TempDir other;
  Process chatd(chatd_argv("uds", rt.args()), {{"RUNTIME_DIRECTORY", other.path().string()}});
  BOOST_REQUIRE_MESSAGE(wait_serving(chatd, rt.base(), rt.instance()), chatd.err());
  BOOST_CHECK(fs::is_empty(other.path()));
  stop_and_check_clean(chatd, rt, {}, 10s);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(journal)

// chatd with JOURNAL_STREAM set to its own stderr's DEVICE:INODE, as systemd sets it when
// StandardError=journal: the shell finds out the pipe's numbers, then becomes chatd.
std::unique_ptr<Process> start_journal_chatd(const std::vector<std::string>& args,
                                             const std::string& stream = "") {
  std::vector<std::string> argv = {
      "/bin/sh", "-c",
      (stream.empty() ? "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2)"
                      : "JOURNAL_STREAM=" + stream) +
          "; export JOURNAL_STREAM; exec \"$0\" \"$@\""};
  for (const auto& a : chatd_argv("uds", args)) argv.push_back(a);
  return std::make_unique<Process>(argv);
}

// Each line carries its syslog priority instead of a timestamp and level: info <6>, and an
// error (a second chatd for the same instance) <3>.
BOOST_AUTO_TEST_CASE(priority_prefixes) {
  TempRuntime rt;
  auto chatd = start_journal_chatd(rt.args());
  BOOST_REQUIRE_MESSAGE(wait_serving(*chatd, rt.base(), rt.instance()), chatd->err());
  auto second = start_journal_chatd(rt.args());
  BOOST_CHECK_EQUAL(second->exit_code(10s), 3);
  const auto err2 = lines_of(second->err());
  BOOST_REQUIRE(!err2.empty());
  BOOST_CHECK_MESSAGE(
      err2.front().rfind("<3>instance '" + rt.instance() + "' is already served", 0) == 0,
      err2.front());
  stop_and_check_clean(*chatd, rt, {second->pid()}, 10s);
  const auto lines = lines_of(chatd->err());
  BOOST_REQUIRE_GE(lines.size(), 2u);
  for (const auto& l : lines) BOOST_CHECK_MESSAGE(has_priority_prefix(l), l);
  BOOST_CHECK(lines.front().rfind("<6>serving instance '" + rt.instance() + "'", 0) == 0);
  BOOST_CHECK(lines.back() == "<6>shut down cleanly");
}

// A JOURNAL_STREAM that names another stream (stderr redirected after systemd set it) leaves
// the usual timestamped lines.
BOOST_AUTO_TEST_CASE(other_stream_keeps_timestamps) {
  TempRuntime rt;
  auto chatd = start_journal_chatd(rt.args(), "1:1");
  BOOST_REQUIRE_MESSAGE(wait_serving(*chatd, rt.base(), rt.instance()), chatd->err());
  stop_and_check_clean(*chatd, rt, {}, 10s);
  const auto lines = lines_of(chatd->err());
  BOOST_REQUIRE(!lines.empty());
  for (const auto& l : lines) {
    BOOST_CHECK_MESSAGE(has_timestamp(l) && l.find(" chatd info: ") != std::string::npos, l);
  }
}

// is_journal_stream() in-process: true only for the very stream JOURNAL_STREAM names.
BOOST_AUTO_TEST_CASE(is_journal_stream) {
  int fds[2];
  BOOST_REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  const chat::UniqueFd r(fds[0]), w(fds[1]);
  struct stat st {};
  BOOST_REQUIRE(::fstat(w.get(), &st) == 0);
  const std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  const char* saved = std::getenv("JOURNAL_STREAM");
  const std::string before = saved != nullptr ? saved : "";
  ::unsetenv("JOURNAL_STREAM");
  BOOST_CHECK(!chat::is_journal_stream(w.get()));
  ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
  BOOST_CHECK(chat::is_journal_stream(w.get()));
  BOOST_CHECK(!chat::is_journal_stream(-1));
  {
    const chat::Logger logger("t", chat::LogLevel::kDebug, w.get());
    logger.debug("d");
    logger.warn("w");
  }
  ::setenv("JOURNAL_STREAM", (mine + "0").c_str(), 1);
  BOOST_CHECK(!chat::is_journal_stream(w.get()));
  if (saved != nullptr) {
    ::setenv("JOURNAL_STREAM", before.c_str(), 1);
  } else {
    ::unsetenv("JOURNAL_STREAM");
  }
  char buf[64] = {};
  const ssize_t n = ::read(r.get(), buf, sizeof buf - 1);
  BOOST_CHECK_EQUAL(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0), "<7>d\n<4>w\n");
}

BOOST_AUTO_TEST_SUITE_END()

// Several people on one host: chatd runs as an unprivileged account of its own, clients run as
// other accounts, and the kernel — never the client — says who each one is. Also what a member
// of another account can reach directly, without `chat`: nothing of anybody else's.
//
// Needs root (to start processes under other uids) and the accounts scripts/test-accounts.sh
// creates; without them each test says so and passes nothing off as checked.
#define BOOST_TEST_MODULE multiuser
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/msg.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"

namespace bdata = boost::unit_test::data;
namespace fs = std::filesystem;
using namespace chat::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr char kGroup[] = "ipchat-chat";

struct Account {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

std::optional<Account> account(const std::string& name) {
  const passwd* pw = ::getpwnam(name.c_str());
  if (pw == nullptr) return std::nullopt;
  return Account{name, pw->pw_uid, pw->pw_gid};
}

// The accounts of the tests, or nullopt (and a message) where they cannot run.
struct Cast {
  Account srv, ann, bob, eve;
};
std::optional<Cast> cast() {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("skipped: needs root to run processes under other accounts");
    return std::nullopt;
  }
  auto srv = account("ipchat-srv"), ann = account("ipchat-ann"), bob = account("ipchat-bob"),
       eve = account("ipchat-eve");
  if (!srv || !ann || !bob || !eve || ::getgrnam(kGroup) == nullptr) {
    BOOST_TEST_MESSAGE("skipped: run scripts/test-accounts.sh to create the test accounts");
    return std::nullopt;
  }
  return Cast{*srv, *ann, *bob, *eve};
}

// `argv` run as `a` (with its groups), through util-linux's setpriv.
std::vector<std::string> as(const Account& a, std::vector<std::string> argv) {
  std::vector<std::string> full = {"/usr/bin/setpriv", "--reuid=" + std::to_string(a.uid),
                                   "--regid=" + std::to_string(a.gid), "--init-groups", "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  return full;
}

// chatd as `srv` on `rt` (whose base becomes srv's), once its door is open.
std::unique_ptr<Process> start_chatd_as(const Account& srv, const TempRuntime& rt,
                                        const std::string& transport, const std::string& access) {
  BOOST_REQUIRE(::chown(rt.base().c_str(), srv.uid, srv.gid) == 0);
  std::vector<std::string> argv = {binary("chatd").string(), "--transport=" + transport,
                                   "--access=" + access};
  for (auto& a : rt.args()) argv.push_back(a);
  auto p = std::make_unique<Process>(as(srv, argv));
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < end && p->running()) {
    std::error_code ec;
    if (fs::exists(rt.dir() / "door.sock", ec) && fs::exists(rt.dir() / "instance.json", ec)) {
      return p;
    }
    std::this_thread::sleep_for(5ms);
  }
  BOOST_FAIL("chatd as " + srv.name + " did not start: " + p->err());
  return nullptr;
}

std::unique_ptr<Process> start_chat_as(const Account& a, const TempRuntime& rt,
                                       const std::string& nick, bool wait_welcome = true) {
  std::vector<std::string> argv = {binary("chat").string(), "-n", nick, "--jsonl"};
  for (auto& arg : rt.args()) argv.push_back(arg);
  auto p = std::make_unique<Process>(as(a, argv));
  if (wait_welcome) {
    BOOST_REQUIRE_MESSAGE(wait_events(*p, "welcome", 1, 10s),
                          nick << " (" << a.name << ") got no welcome: " << p->err());
  }
  return p;
}

// Runs `probe` in a child process that has become `a` (uid, gid, groups); returns its exit
// status: the number of things the probe reached that it must not.
int as_account(const Account& a, const std::function<int()>& probe) {
  const pid_t child = ::fork();
  if (child == 0) {
    int ngroups = 64;
    std::vector<gid_t> groups(ngroups);
    ::getgrouplist(a.name.c_str(), a.gid, groups.data(), &ngroups);
    groups.resize(static_cast<std::size_t>(std::max(ngroups, 0)));
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(a.gid, a.gid, a.gid) != 0 ||
        ::setresuid(a.uid, a.uid, a.uid) != 0) {
      ::_exit(250);
    }
    ::_exit(std::min(probe(), 249));
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

struct SysvObject {
  int id;
  uid_t uid;
  uid_t cuid;
  unsigned mode;
};

// SysV objects of kind `kind` ("msg" or "shm") from /proc/sysvipc.
std::vector<SysvObject> sysv_objects(const std::string& kind) {
  std::ifstream in("/proc/sysvipc/" + kind);
  std::string header;
  std::getline(in, header);
  std::istringstream h(header);
  std::vector<std::string> columns;
  for (std::string c; h >> c;) columns.push_back(c);
  std::vector<SysvObject> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream l(line);
    std::map<std::string, std::string> row;
    for (const auto& c : columns) l >> row[c];
    out.push_back({std::stoi(row["msqid"].empty() ? row["shmid"] : row["msqid"]),
                   static_cast<uid_t>(std::stoul(row["uid"])),
                   static_cast<uid_t>(std::stoul(row["cuid"])),
                   static_cast<unsigned>(std::stoul(row["perms"], nullptr, 8))});
  }
  return out;
}

// Everything `srv`'s chatd created that has a name or an id: files in the runtime dir, POSIX
// shm in /dev/shm, SysV queues and segments.
struct Objects {
  std::vector<fs::path> files;
  std::vector<SysvObject> queues, segments;
};
Objects objects_of(const Account& srv, const TempRuntime& rt) {
  Objects o;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(rt.dir(), ec)) o.files.push_back(e.path());
  for (const auto& e : fs::directory_iterator("/dev/shm", ec)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) == 0 && st.st_uid == srv.uid) o.files.push_back(e.path());
  }
  for (const auto& q : sysv_objects("msg")) {
    if (q.cuid == srv.uid) o.queues.push_back(q);
  }
  for (const auto& s : sysv_objects("shm")) {
    if (s.cuid == srv.uid) o.segments.push_back(s);
  }
  return o;
}

// What `who` can open, map, read or write of `o` that it does not own: the number of hits.
// The door may be connected to (that is what it is for); nothing else.
int reachable(const Account& who, const Objects& o) {
  return as_account(who, [&] {
    int hits = 0;
    for (const auto& f : o.files) {
      if (f.filename() == "door.sock") continue;
      for (int flags : {O_RDONLY, O_WRONLY, O_RDWR}) {
        const int fd = ::open(f.c_str(), flags | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
          ++hits;
          ::close(fd);
        }
      }
    }
    for (const auto& q : o.queues) {
      if (q.uid == who.uid) continue;  // its own
      char buf[64] = {};
      long mtype = 1;
      std::memcpy(buf, &mtype, sizeof mtype);
      if (::msgsnd(q.id, buf, 8, IPC_NOWAIT) == 0) ++hits;
      if (::msgrcv(q.id, buf, 8, 0, IPC_NOWAIT | MSG_NOERROR) >= 0) ++hits;
      msqid_ds ds{};
      if (::msgctl(q.id, IPC_STAT, &ds) == 0) ++hits;
    }
    for (const auto& s : o.segments) {
      if (s.uid == who.uid) continue;
      void* p = ::shmat(s.id, nullptr, SHM_RDONLY);
      if (p != reinterpret_cast<void*>(-1)) {
        ++hits;
        ::shmdt(p);
      }
    }
    return hits;
  });
}

// Objects any account could read or write (the door aside, which `all` opens to everyone).
std::vector<std::string> world_accessible(const Objects& o) {
  std::vector<std::string> out;
  for (const auto& f : o.files) {
    struct stat st {};
    if (::lstat(f.c_str(), &st) != 0 || f.filename() == "door.sock") continue;
    if (st.st_mode & 0006) out.push_back(f.string());
  }
  for (const auto& q : o.queues) {
    if (q.mode & 0006) out.push_back("msg queue " + std::to_string(q.id));
  }
  for (const auto& s : o.segments) {
    if (s.mode & 0006) out.push_back("shm segment " + std::to_string(s.id));
  }
  return out;
}

void stop(Process& chatd, const TempRuntime& rt, std::vector<pid_t> pids) {
  pids.push_back(chatd.pid());
  stop_and_check_clean(chatd, rt, pids, 10s);
}

}  // namespace

// The transports whose clients enter through the door (every one but `signal`).
std::vector<std::string> multiuser_backends() {
  std::vector<std::string> out;
  for (const auto& b : all_backends()) {
    if (b != "signal") out.push_back(b);
  }
  return out;
}

BOOST_AUTO_TEST_SUITE(multiuser)

BOOST_DATA_TEST_CASE(two_accounts_chat_and_the_kernel_names_them, bdata::make(multiuser_backends()),
                     transport) {
  const auto c = cast();
  if (!c) return;
  TempRuntime rt;
  auto chatd = start_chatd_as(c->srv, rt, transport, std::string("group:") + kGroup);
  auto ann = start_chat_as(c->ann, rt, "ann");
  auto bob = start_chat_as(c->bob, rt, "bob");
  BOOST_REQUIRE(wait_events(*ann, "join", 2, 10s));
  ann->write("hello from ann\n");
  bob->write("/msg ann psst\n");
  BOOST_REQUIRE_MESSAGE(wait_events(*bob, "message", 1, 10s), bob->err());
  BOOST_REQUIRE_MESSAGE(wait_events(*ann, "private", 1, 10s), ann->err());
  const json said = events(*bob, "message").at(0);
  BOOST_TEST(said["from"] == "ann");
  BOOST_TEST(said["user"] == "ipchat-ann");
  BOOST_TEST(said["text"] == "hello from ann");
  BOOST_TEST(events(*ann, "private").at(0)["user"] == "ipchat-bob");
  BOOST_TEST(events(*ann, "join").at(1)["user"] == "ipchat-bob");

  // /whois shows the account behind a nick.
  bob->write("/whois ann\n");
  BOOST_REQUIRE(wait_events(*bob, "whois", 1, 10s));
  BOOST_TEST(events(*bob, "whois").at(0)["user"] == "ipchat-ann");

  // Nobody may pose as another account.
  bob->write("/nick ipchat-ann\n");
  BOOST_REQUIRE(wait_events(*bob, "error", 1, 10s));
  BOOST_TEST(events(*bob, "error").at(0)["code"] == "nick_reserved");

  // An account outside the group: exit 6, "permission denied", and the policy.
  auto eve = start_chat_as(c->eve, rt, "eve", false);
  BOOST_TEST(eve->exit_code(10s) == 6);
  BOOST_TEST(eve->err().find("permission denied") != std::string::npos, eve->err());
  BOOST_TEST(eve->err().find(kGroup) != std::string::npos, eve->err());

  // What each account can reach directly: nothing of the others', nothing of the server's.
  const Objects o = objects_of(c->srv, rt);
  BOOST_TEST(world_accessible(o).empty());
  BOOST_TEST(reachable(c->ann, o) == 0);
  BOOST_TEST(reachable(c->eve, o) == 0);
  BOOST_TEST(as_account(c->ann, [&] { return ::kill(bob->pid(), 0) == 0 ? 1 : 0; }) == 0);

  ann->close_stdin();
  bob->close_stdin();
  BOOST_TEST(ann->exit_code(10s) == 0, ann->err());
  BOOST_TEST(bob->exit_code(10s) == 0, bob->err());
  stop(*chatd, rt, {ann->pid(), bob->pid(), eve->pid()});
}

BOOST_DATA_TEST_CASE(access_all_admits_every_account_and_user_only_the_server_s,
                     bdata::make(multiuser_backends()), transport) {
  const auto c = cast();
  if (!c) return;
  {
    TempRuntime rt;
    auto chatd = start_chatd_as(c->srv, rt, transport, "all");
    auto eve = start_chat_as(c->eve, rt, "eve");
    const Objects o = objects_of(c->srv, rt);
    BOOST_TEST(world_accessible(o).empty());
    BOOST_TEST(reachable(c->ann, o) == 0);
    eve->close_stdin();
    BOOST_TEST(eve->exit_code(10s) == 0, eve->err());
    stop(*chatd, rt, {eve->pid()});
  }
  {
    TempRuntime rt;
    auto chatd = start_chatd_as(c->srv, rt, transport, "user");
    auto ann = start_chat_as(c->ann, rt, "ann", false);
    BOOST_TEST(ann->exit_code(10s) == 6);
    BOOST_TEST(ann->err().find("permission denied") != std::string::npos, ann->err());
    BOOST_TEST(ann->err().find("no chatd") == std::string::npos, ann->err());
    stop(*chatd, rt, {ann->pid()});
  }
}

// A client's default base is its own: a server another account runs there (say, in a planted
// /tmp/ipchat-UID) must not get the client's words. Named with --runtime-dir, it may.
BOOST_AUTO_TEST_CASE(default_base_planted_by_another_account_is_refused) {
  const auto c = cast();
  if (!c) return;
  TempRuntime rt;  // rt.base() plays XDG_RUNTIME_DIR/ipchat, planted by srv
  const fs::path xdg = rt.base().parent_path() / (rt.base().filename().string() + ".xdg");
  fs::create_directory(xdg);
  ::chmod(xdg.c_str(), 0755);
  BOOST_REQUIRE(::symlink(rt.base().c_str(), (xdg / "ipchat").c_str()) == 0 || errno == EEXIST);
  auto chatd = start_chatd_as(c->srv, rt, "uds", "all");
  std::vector<std::string> argv = {binary("chat").string(), "-n", "ann", "--jsonl",
                                   "--instance=" + rt.instance()};
  Process ann(as(c->ann, argv), {{"XDG_RUNTIME_DIR", xdg.string()}});
  BOOST_TEST(ann.exit_code(10s) == 1);
  BOOST_TEST(ann.err().find("not this account's own runtime dir") != std::string::npos, ann.err());
  auto named = start_chat_as(c->ann, rt, "ann");  // --runtime-dir: a shared server, on purpose
  named->close_stdin();
  BOOST_TEST(named->exit_code(10s) == 0, named->err());
  stop(*chatd, rt, {ann.pid(), named->pid()});
  fs::remove_all(xdg);
}

BOOST_AUTO_TEST_CASE(signal_refuses_other_accounts_at_start) {
  TempRuntime rt;
  std::vector<std::string> argv = {binary("chatd").string(), "--transport=signal", "--access=all"};
  for (auto& a : rt.args()) argv.push_back(a);
  Process chatd(argv);
  BOOST_TEST(chatd.exit_code(10s) == 2);
  BOOST_TEST(chatd.err().find("only with --access=user") != std::string::npos, chatd.err());
  BOOST_TEST(chatd.err().find("signal") != std::string::npos, chatd.err());
  check_no_leftovers(rt, {chatd.pid()});
}

BOOST_AUTO_TEST_CASE(unknown_access_policy_is_a_usage_error) {
  TempRuntime rt;
  for (const std::string bad : {"everyone", "group:", "group:no-such-group-here"}) {
    std::vector<std::string> argv = {binary("chatd").string(), "--access=" + bad};
    for (auto& a : rt.args()) argv.push_back(a);
    Process chatd(argv);
    BOOST_TEST(chatd.exit_code(10s) == 2, bad);
    BOOST_TEST(chatd.err().find("--access") != std::string::npos, chatd.err());
  }
  check_no_leftovers(rt, {});
}

BOOST_AUTO_TEST_SUITE_END()

// Pitfalls of the `mmap` backend: its segments are plain files in the runtime dir until they
// are granted, so a file planted there (a symlink, someone else's file) must never be followed
// or used, a client maps only a private file of the server's, and the umask must not loosen
// the 0600 of what the server creates.
#define BOOST_TEST_MODULE mmap_transport
#include "transport/mmap/mmap.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/instance.hpp"
#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"
#include "tests/support/server_harness.hpp"
#include "tests/support/support.hpp"
#include "transport/shm/layout.hpp"

namespace bdata = boost::unit_test::data;
namespace fs = std::filesystem;
using namespace chat;
using namespace chat::transport;
using namespace chat::test;

namespace {

constexpr std::size_t kBytes = 8192;

// Writes `content` to a new file `path` with `mode` (exactly, whatever the umask).
void write_file(const fs::path& path, const std::string& content, mode_t mode = 0600) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  BOOST_REQUIRE_MESSAGE(fd >= 0, path << ": " << std::strerror(errno));
  BOOST_REQUIRE(::fchmod(fd, mode) == 0);
  BOOST_REQUIRE(::write(fd, content.data(), content.size()) ==
                static_cast<ssize_t>(content.size()));
  ::close(fd);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

mode_t mode_of(const fs::path& path) {
  struct stat st {};
  BOOST_REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

void check_nothing_left(const TempRuntime& rt, const std::vector<pid_t>& pids = {}) {
  std::vector<pid_t> all{::getpid()};
  all.insert(all.end(), pids.begin(), pids.end());
  check_no_leftovers(rt, all);
}

// Restores the umask when the test ends, however it ends.
class UmaskGuard {
 public:
  explicit UmaskGuard(mode_t mask) : old_(::umask(mask)) {}
  ~UmaskGuard() { ::umask(old_); }
  UmaskGuard(const UmaskGuard&) = delete;
  UmaskGuard& operator=(const UmaskGuard&) = delete;

 private:
  mode_t old_;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(mmap_backend)

// A symlink (or any file) planted where the server creates a client's file would make it
// write the rings into whatever the link points at: the server refuses that client instead,
// the target stays untouched, and the next client gets a file of its own.
BOOST_AUTO_TEST_CASE(a_symlink_planted_as_a_client_file_is_refused) {
  ServerHarness server(*find_backend("mmap"));
  const fs::path target = server.rt().base() / "precious";
  write_file(target, "do not overwrite");
  fs::create_symlink(target, server.dir() / "mmap.c0.1");
  try {
    server.connect();
    BOOST_ERROR("a client was granted the planted file");
  } catch (const ConnectError& e) {
    BOOST_TEST((e.kind() == ConnectError::Kind::kRefused));
    BOOST_TEST_MESSAGE(e.what());
  }
  BOOST_TEST(read_file(target) == "do not overwrite");
  BOOST_TEST(fs::is_symlink(fs::symlink_status(server.dir() / "mmap.c0.1")));  // not ours
  auto [client, id] = server.connect_and_wait();
  BOOST_TEST(server.round_trip(*client, id, "fine"));
  server.ep().close(id);
  client.reset();
  fs::remove(server.dir() / "mmap.c0.1");
  fs::remove(target);
}

// A client maps only what it was granted, and only if that is a private regular file of the
// server's account of the expected size.
BOOST_AUTO_TEST_CASE(odd_files_are_refused) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  auto files = mmap::make_file_source(dir.path());
  const fs::path d = dir.path();
  const auto open_fd = [&](const char* name) {
    UniqueFd fd(::open((d / name).c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK));
    BOOST_REQUIRE_MESSAGE(fd, name << ": " << std::strerror(errno));
    return fd;
  };
  const nlohmann::json channel = nlohmann::json::object();
  write_file(d / "mmap.ok", std::string(kBytes, '\0'));
  write_file(d / "mmap.group", std::string(kBytes, '\0'), 0640);
  write_file(d / "mmap.others", std::string(kBytes, '\0'), 0604);
  write_file(d / "mmap.short", std::string(kBytes / 2, '\0'));
  BOOST_REQUIRE(::mkfifo((d / "mmap.fifo").c_str(), 0600) == 0);
  BOOST_CHECK_NO_THROW(files->attach(channel, open_fd("mmap.ok"), kBytes, ::geteuid()));
  for (const char* name : {"mmap.group", "mmap.others", "mmap.short", "mmap.fifo"}) {
    BOOST_CHECK_THROW(files->attach(channel, open_fd(name), kBytes, ::geteuid()), std::exception);
  }
  // A file of ours is not the server's if the server is another account.
  BOOST_CHECK_THROW(files->attach(channel, open_fd("mmap.ok"), kBytes, ::geteuid() + 1),
                    std::exception);
  UniqueFd dir_fd(::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  BOOST_CHECK_THROW(files->attach(channel, std::move(dir_fd), kBytes, ::geteuid()), std::exception);
  dir.remove();
  check_nothing_left(rt);
}

// Every file the backend creates is 0600 whatever the umask, also 000 (which would otherwise
// let the open mode through unchanged) and 0277 (which would take the owner's write bit).
BOOST_DATA_TEST_CASE(files_are_0600_whatever_the_umask, bdata::make({0000, 0022, 0277}), mask) {
  TempRuntime rt;
  UmaskGuard umask_guard(static_cast<mode_t>(mask));
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  ListenOptions lo;
  lo.dir = dir.path();
  lo.instance = rt.instance();
  lo.max_clients = 4;
  auto ep = mmap::listen(lo);
  auto files = mmap::make_file_source(dir.path());
  {
    auto seg = files->create("c7.1", sizeof(shm::ClientBlock));
    BOOST_TEST(mode_of(dir.path() / "mmap.c7.1") == 0600u);
    seg->granted();
    BOOST_TEST(!fs::exists(dir.path() / "mmap.c7.1"));
  }

  // And the whole way in works under it; the file granted is 0600 too.
  std::unique_ptr<ClientConnection> client;
  std::thread connecting([&] {
    ConnectOptions co = arrive(dir.path(), rt.instance(), deadline_after(5s));
    struct stat st {};
    if (!co.pass.fds.empty() && ::fstat(co.pass.fds[0].get(), &st) == 0) {
      BOOST_TEST((st.st_mode & 07777) == 0600u);
    }
    client = mmap::connect(std::move(co));
  });
  std::vector<ServerEvent> events;
  const auto end = Clock::now() + 5s;
  while (events.empty() && Clock::now() < end) ep->poll(events, deadline_after(100ms));
  connecting.join();
  BOOST_REQUIRE(!events.empty());
  BOOST_TEST((events[0].kind == ServerEvent::Kind::kConnected));
  BOOST_REQUIRE(client);
  const Frame hello{std::byte{'h'}, std::byte{'i'}};
  BOOST_TEST((ep->send(events[0].client, hello) == SendResult::kSent));
  Frame got;
  BOOST_TEST((client->receive(got, deadline_after(5s)) == ReceiveResult::kFrame));
  BOOST_TEST((got == hello));
  ep->close(events[0].client);
  client.reset();
  ep.reset();
  dir.remove();
  check_nothing_left(rt);
}

// A chatd killed with SIGKILL between creating a client's file and granting it leaves that
// file; a new chatd on the instance starts without manual cleanup and removes it.
BOOST_AUTO_TEST_CASE(a_restarting_chatd_removes_a_killed_ones_files) {
  TempRuntime rt;
  auto first = start_chatd(rt, "mmap");
  auto alice = start_chat(rt, "alice");
  first->kill(SIGKILL);
  BOOST_REQUIRE(first->exit_code(5s) == 128 + SIGKILL);
  BOOST_TEST(alice->exit_code(5s) == 5);
  const fs::path stale = rt.dir() / "mmap.c0.1";
  write_file(stale, std::string(kBytes, '\0'));  // as the killed one would have left it
  auto second = start_chatd(rt, "mmap");
  BOOST_REQUIRE(second->wait_err_contains("serving instance", 5s));
  BOOST_TEST(!fs::exists(stale));
  auto bob = start_chat(rt, "bob");
  bob->write("hello again\n");
  BOOST_TEST(wait_events(*bob, "message", 1, 5s));
  bob->close_stdin();
  BOOST_TEST(bob->exit_code(10s) == 0);
  stop_and_check_clean(*second, rt, {::getpid(), first->pid(), alice->pid(), bob->pid()}, 5s);
}

BOOST_AUTO_TEST_SUITE_END()

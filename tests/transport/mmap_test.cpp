// Pitfalls of the `mmap` backend: its segments are plain files in the runtime dir, so a file
// planted there (a symlink, a FIFO, someone else's file) must never be followed or mapped, and
// the umask must not loosen the 0600 of what the server creates.
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

// A symlink where the server's control file goes would make it write the rings into whatever
// the link points at: the server must refuse to start, and the target stays untouched.
BOOST_AUTO_TEST_CASE(a_symlink_planted_as_the_control_file_is_refused) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const fs::path target = rt.base() / "precious";
  write_file(target, "do not overwrite");
  fs::create_symlink(target, dir.path() / "mmap.ctl");
  ListenOptions lo;
  lo.dir = dir.path();
  lo.instance = rt.instance();
  lo.max_clients = 4;
  BOOST_CHECK_THROW(mmap::listen(lo), std::system_error);
  BOOST_TEST(read_file(target) == "do not overwrite");
  BOOST_TEST(fs::is_symlink(fs::symlink_status(dir.path() / "mmap.ctl")));  // not ours to remove
  fs::remove(dir.path() / "mmap.ctl");
  BOOST_CHECK_NO_THROW(mmap::listen(lo));  // and a clean directory works
  fs::remove(target);
  dir.remove();
  check_nothing_left(rt);
}

// A client maps the file the server's grant names; a symlink planted under that name, or a
// name that leaves the runtime dir, is refused and nothing behind it is mapped or removed.
BOOST_AUTO_TEST_CASE(a_symlink_or_a_path_as_a_client_segment_is_refused) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  auto files = mmap::make_file_source(dir.path());
  const fs::path target = rt.base() / "precious";
  write_file(target, std::string(kBytes, 'x'));
  fs::create_symlink(target, dir.path() / "mmap.c1.1");
  BOOST_CHECK_THROW(files->open("mmap.c1.1", kBytes), std::system_error);
  for (const std::string name :
       {"../precious", "mmap.c1/../../precious", "/tmp", "mmap.", "", "ctl"}) {
    BOOST_CHECK_THROW(files->open(name, kBytes), std::system_error);
    files->remove(name);
  }
  BOOST_TEST(read_file(target) == std::string(kBytes, 'x'));
  auto good = files->create("c2.1", kBytes);
  BOOST_CHECK_NO_THROW(files->open(good->name(), kBytes));
  files->remove(good->name());
  files->remove(good->name());  // idempotent
  BOOST_TEST(!fs::exists(dir.path() / good->name()));
  fs::remove(dir.path() / "mmap.c1.1");
  fs::remove(target);
  dir.remove();
  check_nothing_left(rt);
}

// Only a private regular file of ours of the right size is mapped.
BOOST_AUTO_TEST_CASE(odd_files_are_refused) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  auto files = mmap::make_file_source(dir.path());
  const fs::path d = dir.path();
  write_file(d / "mmap.ok", std::string(kBytes, '\0'));
  write_file(d / "mmap.group", std::string(kBytes, '\0'), 0640);
  write_file(d / "mmap.others", std::string(kBytes, '\0'), 0604);
  write_file(d / "mmap.short", std::string(kBytes / 2, '\0'));
  fs::create_directory(d / "mmap.dir");
  BOOST_REQUIRE(::mkfifo((d / "mmap.fifo").c_str(), 0600) == 0);
  BOOST_CHECK_NO_THROW(files->open("mmap.ok", kBytes));
  for (const char* name : {"mmap.group", "mmap.others", "mmap.short", "mmap.dir", "mmap.fifo"}) {
    BOOST_CHECK_THROW(files->open(name, kBytes), std::system_error);
  }
  if (::geteuid() == 0) {
    // Only root can give a file away; a file of another user is refused.
    write_file(d / "mmap.foreign", std::string(kBytes, '\0'));
    BOOST_REQUIRE(::chown((d / "mmap.foreign").c_str(), 65534, 65534) == 0);
    BOOST_CHECK_THROW(files->open("mmap.foreign", kBytes), std::system_error);
  }
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
  BOOST_TEST(mode_of(dir.path() / "mmap.ctl") == 0600u);
  auto files = mmap::make_file_source(dir.path());
  auto seg = files->create("c7.1", sizeof(shm::ClientBlock));
  BOOST_TEST(mode_of(dir.path() / seg->name()) == 0600u);
  BOOST_CHECK_NO_THROW(files->open(seg->name(), sizeof(shm::ClientBlock)));
  files->remove(seg->name());

  // And the whole handshake works under it.
  std::unique_ptr<ClientConnection> client;
  std::thread connecting([&] {
    client = mmap::connect(
        named_options(dir.path(), rt.instance(), ::getpid(), ep->objects(), deadline_after(5s)));
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

// A chatd killed with SIGKILL leaves its control file; a new chatd on the instance starts
// without manual cleanup, over a control file of its own.
BOOST_AUTO_TEST_CASE(a_restarting_chatd_replaces_a_killed_ones_files) {
  TempRuntime rt;
  auto first = start_chatd(rt, "mmap");
  const fs::path ctl = rt.dir() / "mmap.ctl";
  BOOST_REQUIRE(fs::exists(ctl));
  first->kill(SIGKILL);
  BOOST_REQUIRE(first->exit_code(5s) == 128 + SIGKILL);
  BOOST_REQUIRE(fs::exists(ctl));
  auto second = start_chatd(rt, "mmap");
  BOOST_REQUIRE(second->wait_err_contains("serving instance", 5s));
  BOOST_TEST(second->err().find("mmap.ctl") != std::string::npos);  // logged as removed
  auto bob = start_chat(rt, "bob");
  bob->write("hello again\n");
  BOOST_TEST(wait_events(*bob, "message", 1, 5s));
  bob->close_stdin();
  BOOST_TEST(bob->exit_code(10s) == 0);
  stop_and_check_clean(*second, rt, {::getpid(), first->pid(), bob->pid()}, 5s);
}

BOOST_AUTO_TEST_SUITE_END()

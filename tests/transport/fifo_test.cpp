// Pitfalls of the `fifo` backend: garbage in the hello FIFO and in a client's own FIFO, frames
// split across writes, a reader that vanished (EPIPE, not SIGPIPE), a FIFO with no reader
// (ENXIO), planted symlinks and foreign FIFOs, and the umask.
#define BOOST_TEST_MODULE fifo_transport
#include "transport/fifo/fifo.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "common/instance.hpp"
#include "tests/support/chat_process.hpp"
#include "tests/support/frames.hpp"
#include "tests/support/main_fixture.hpp"
#include "tests/support/server_harness.hpp"
#include "tests/support/support.hpp"
#include "transport/factory.hpp"
#include "transport/fifo/wire.hpp"

namespace bdata = boost::unit_test::data;
namespace fs = std::filesystem;
using namespace chat;
using namespace chat::transport;
using namespace chat::test;
namespace wire = chat::transport::fifo::wire;
using Kind = ServerEvent::Kind;

namespace {

const Backend& fifo_backend() {
  return *find_backend("fifo");
}

// The fifo server of these tests; what it warns about shows in the test log.
struct FifoServer : ServerHarness {
  explicit FifoServer(std::size_t max_clients = 16)
      : ServerHarness(fifo_backend(), {max_clients, "fifo_test"}) {}
};

// Our descriptors whose target name ends with `suffix` (a client's FIFOs are unlinked once
// connected: "... .up (deleted)").
std::set<int> fds_named(const std::string& suffix) {
  std::set<int> fds;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = fs::read_symlink(e.path(), ec).string();
    if (!ec && target.size() >= suffix.size() &&
        target.compare(target.size() - suffix.size(), suffix.size(), suffix) == 0) {
      fds.insert(std::stoi(e.path().filename().string()));
    }
  }
  return fds;
}

// Connects a client and opens a second writer on its .up FIFO, as a hostile client could.
struct HostileClient {
  std::unique_ptr<ClientConnection> conn;
  ClientId id = 0;
  UniqueFd up;  // another writer on the client's .up

  explicit HostileClient(FifoServer& server) {
    const auto before = fds_named(".up (deleted)");
    std::tie(conn, id) = server.connect_and_wait();
    const auto after = fds_named(".up (deleted)");
    std::vector<int> added;
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                        std::back_inserter(added));
    BOOST_REQUIRE_EQUAL(added.size(), 2u);  // the server's reading end and the client's writer
    for (int fd : added) {
      if ((::fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY) {
        up = UniqueFd(::open(("/proc/self/fd/" + std::to_string(fd)).c_str(),
                             O_WRONLY | O_NONBLOCK | O_CLOEXEC));
      }
    }
    BOOST_REQUIRE(up);
  }

  void write(const std::vector<std::byte>& bytes) const {
    BOOST_REQUIRE_EQUAL(::write(up.get(), bytes.data(), bytes.size()),
                        static_cast<ssize_t>(bytes.size()));
  }
};

std::vector<std::byte> header(wire::Kind kind, std::size_t length) {
  const auto h = wire::encode_header(kind, length);
  return {h.begin(), h.end()};
}

std::vector<std::byte> bytes_of(const std::string& s) {
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

// The files in `dir` other than the instance's own.
std::vector<std::string> transport_files(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name != "lock" && name != "instance.json") names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Bytes a hostile client writes into its own .up FIFO, and what the server should say.
struct UpGarbage {
  std::string name;
  std::vector<std::byte> bytes;
  std::string detail;  // part of ServerEvent::detail
};

std::ostream& operator<<(std::ostream& os, const UpGarbage& g) {
  return os << g.name;
}

std::vector<UpGarbage> up_garbage() {
  std::vector<std::byte> bad_check = header(wire::Kind::kData, 3);
  bad_check[3] ^= std::byte{1};
  std::vector<std::byte> oversize = header(wire::Kind::kData, kMaxFrameBytes + 1);
  std::vector<std::byte> unknown = {std::byte{0}, std::byte{0}, std::byte{9},
                                    wire::header_check(0, static_cast<wire::Kind>(9))};
  return {
      {"unknown kind", unknown, "unknown frame kind 9"},
      {"oversize length", oversize, "data frame of 4097 bytes"},
      {"empty data frame", header(wire::Kind::kData, 0), "data frame of 0 bytes"},
      {"bad check byte", bad_check, "check byte"},
      {"second ready", header(wire::Kind::kReady, 0), "second kReady"},
      {"ascii", bytes_of("GET / HTTP/1.0\r\n\r\n"), "frame"},
  };
}

}  // namespace

BOOST_AUTO_TEST_SUITE(fifo)

BOOST_AUTO_TEST_CASE(fifos_are_private_whatever_the_umask_and_pipes_are_bounded) {
  const mode_t old = ::umask(0777);  // the worst case: mkfifo creates mode 0000
  {
    FifoServer server;
    struct stat st {};
    BOOST_REQUIRE(::lstat((server.dir() / wire::kHelloFifo).c_str(), &st) == 0);
    BOOST_TEST(S_ISFIFO(st.st_mode));
    BOOST_TEST((st.st_mode & 07777) == 0600u);
    auto [client, id] = server.connect_and_wait();
    BOOST_TEST(server.round_trip(*client, id, "private"));
    // Once connected, the client's FIFOs have no names any more: only the hello FIFO is left.
    BOOST_TEST(transport_files(server.dir()) == std::vector<std::string>{wire::kHelloFifo});
    for (int fd : fds_named(".down (deleted)")) {
      BOOST_TEST(::fcntl(fd, F_GETPIPE_SZ) <= static_cast<int>(kMaxTransportBufferBytes));
    }
    server.ep().close(id);
  }
  ::umask(old);
}

BOOST_AUTO_TEST_CASE(garbage_in_the_hello_fifo_hurts_nobody) {
  FifoServer server;
  auto [a, a_id] = server.connect_and_wait();
  UniqueFd hello(
      ::open((server.dir() / wire::kHelloFifo).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  BOOST_REQUIRE(hello);
  const auto put = [&](const void* p, std::size_t n) {
    BOOST_REQUIRE_EQUAL(::write(hello.get(), p, n), static_cast<ssize_t>(n));
  };
  std::string garbage(1000, '\0');
  for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>(i * 7 + 3);
  put(garbage.data(), garbage.size());
  const wire::HelloRecord own = wire::make_hello(::getpid(), 0x1234);
  put(&own, sizeof own / 2);  // a hello cut short: its magic number, then garbage again
  wire::HelloRecord bad_check = wire::make_hello(::getpid(), 0x5678);
  bad_check.check ^= 1;
  put(&bad_check, sizeof bad_check);
  const wire::HelloRecord no_process = wire::make_hello(dead_pid(), 0x9abc);
  put(&no_process, sizeof no_process);
  const wire::HelloRecord negative = wire::make_hello(-5, 0xdef0);
  put(&negative, sizeof negative);
  // A valid hello from a live process that never gets ready: its FIFOs appear, and go with
  // the server (or after the handshake deadline).
  const wire::HelloRecord never_ready = wire::make_hello(::getpid(), 0x4242);
  put(&never_ready, sizeof never_ready);

  // The server carries on: the old client works, a new one connects.
  BOOST_TEST(server.round_trip(*a, a_id, "still here"));
  auto [b, b_id] = server.connect_and_wait();
  BOOST_TEST(server.round_trip(*b, b_id, "newcomer"));
  BOOST_TEST(fs::exists(server.dir() / wire::down_name(::getpid(), 0x4242)));
  BOOST_TEST(!fs::exists(server.dir() / wire::down_name(::getpid(), 0x5678)));
  BOOST_TEST(!fs::exists(server.dir() / wire::down_name(no_process.pid, 0x9abc)));
  BOOST_TEST(!server.take([](const ServerEvent& e) { return e.kind != Kind::kFrame; }, 200ms));
  server.ep().close(a_id);
  server.ep().close(b_id);
}

BOOST_DATA_TEST_CASE(garbage_in_a_client_fifo_disconnects_only_that_client,
                     bdata::make(up_garbage()), g) {
  BOOST_TEST_MESSAGE("garbage: " << g.name);
  FifoServer server;
  auto [good, good_id] = server.connect_and_wait();
  HostileClient bad(server);
  bad.write(g.bytes);
  const auto d = server.take(Kind::kDisconnected, bad.id);
  BOOST_REQUIRE_MESSAGE(d, "the offender was not disconnected");
  BOOST_TEST((d->gone == ServerEvent::Gone::kMalformed));
  BOOST_TEST_MESSAGE("detail: " << d->detail);
  BOOST_TEST(d->detail.find(g.detail) != std::string::npos, d->detail);
  server.ep().close(bad.id);
  Frame f;
  BOOST_TEST((bad.conn->receive(f, deadline_after(5s)) == ReceiveResult::kClosed));
  BOOST_TEST(server.round_trip(*good, good_id, "unaffected"));
  BOOST_TEST(!server.take(Kind::kDisconnected, good_id, 100ms));
  server.ep().close(good_id);
}

BOOST_AUTO_TEST_CASE(a_frame_split_across_writes_is_reassembled) {
  FifoServer server;
  HostileClient slow(server);
  Frame payload(kMaxFrameBytes);
  for (std::size_t i = 0; i < payload.size(); ++i)
    payload[i] = std::byte{static_cast<std::uint8_t>(i * 13)};
  std::vector<std::byte> wire_bytes = header(wire::Kind::kData, payload.size());
  wire_bytes.insert(wire_bytes.end(), payload.begin(), payload.end());
  // The header in two pieces, the payload in three, each a separate read for the server.
  const std::size_t cuts[] = {0, 1, 4, 1000, 3000, wire_bytes.size()};
  for (std::size_t i = 0; i + 1 < std::size(cuts); ++i) {
    slow.write({wire_bytes.begin() + cuts[i], wire_bytes.begin() + cuts[i + 1]});
    if (i + 2 < std::size(cuts)) {
      BOOST_TEST(!server.take(Kind::kFrame, slow.id, 30ms), "a frame before all of it was written");
    }
  }
  const auto e = server.take(Kind::kFrame, slow.id);
  BOOST_REQUIRE(e);
  BOOST_TEST((e->frame == payload));
  // And the stream continues in step.
  BOOST_TEST(server.round_trip(*slow.conn, slow.id, "next"));
  server.ep().close(slow.id);
}

BOOST_AUTO_TEST_CASE(a_vanished_reader_is_epipe_not_sigpipe) {
  FifoServer server;
  Process peer({binary("transport_peer").string(), "client", "fifo", server.rt().base().string(),
                server.rt().instance(), "idle"});
  server.also_check_pid(peer.pid());
  const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
  BOOST_REQUIRE_MESSAGE(c, "peer did not connect: " + peer.err());
  BOOST_REQUIRE(peer.wait_out_contains("connected", 5s));
  peer.kill(SIGKILL);
  peer.wait(5s);
  const auto d = server.take(Kind::kDisconnected, c->client);
  BOOST_REQUIRE(d);
  BOOST_TEST((d->gone == ServerEvent::Gone::kDied));
  // Writing to a FIFO nobody reads raises SIGPIPE; prepare_process() ignores it, so the write
  // fails with EPIPE and send() says kGone. This process is still here to check that.
  BOOST_TEST((server.ep().send(c->client, frame_of("anyone?")) == SendResult::kGone));
  server.ep().close(c->client);

  // The other way round: a client whose server's reading end is gone.
  auto [client, id] = server.connect_and_wait();
  server.ep().close(id);
  Frame f;
  BOOST_TEST((client->receive(f, deadline_after(5s)) == ReceiveResult::kClosed));
  BOOST_TEST((client->send(frame_of("anyone?"), deadline_after(1s)) == SendResult::kGone));
}

BOOST_AUTO_TEST_CASE(a_hello_fifo_without_a_reader_is_a_clear_error) {
  TempRuntime rt;
  {
    auto dir = InstanceDir::acquire(rt.base(), rt.instance());
    const fs::path hello = dir.path() / wire::kHelloFifo;
    BOOST_REQUIRE(::mkfifo(hello.c_str(), 0600) == 0);
    BOOST_REQUIRE(::chmod(hello.c_str(), 0600) == 0);
    // A live server pid, but nobody reads the FIFO (as after a crash with a reused pid).
    try {
      fifo_backend().connect(named_options(dir.path(), rt.instance(), ::getpid(),
                                           nlohmann::json::object(), deadline_after(2s)));
      BOOST_ERROR("connected to a FIFO nobody reads");
    } catch (const ConnectError& e) {
      BOOST_TEST((e.kind() == ConnectError::Kind::kNoServer));
      BOOST_TEST(std::string(e.what()).find("ENXIO") != std::string::npos, e.what());
    }
    dir.remove();
  }
  check_no_leftovers(rt, {::getpid()});
}

BOOST_AUTO_TEST_CASE(planted_symlinks_and_foreign_fifos_are_refused) {
  TempRuntime elsewhere_rt;  // a place for the things the symlinks point to
  fs::create_directories(elsewhere_rt.dir());
  const fs::path target_fifo = elsewhere_rt.dir() / "target.fifo";
  BOOST_REQUIRE(::mkfifo(target_fifo.c_str(), 0600) == 0);
  const fs::path target_file = elsewhere_rt.dir() / "target.txt";
  { std::ofstream(target_file) << "precious"; }

  {
    // 1. A symlink where the server creates its hello FIFO: listen() refuses.
    TempRuntime rt;
    auto dir = InstanceDir::acquire(rt.base(), rt.instance());
    fs::create_symlink(target_fifo, dir.path() / wire::kHelloFifo);
    ListenOptions lo;
    lo.dir = dir.path();
    lo.instance = rt.instance();
    lo.max_clients = 4;
    BOOST_CHECK_THROW(fifo_backend().listen(lo), std::system_error);
    dir.remove();
  }
  {
    FifoServer server;
    const fs::path hello = server.dir() / wire::kHelloFifo;
    const fs::path moved = server.dir() / "hello.moved";
    fs::rename(hello, moved);
    // 2. A symlink in place of the hello FIFO: the client does not follow it.
    fs::create_symlink(target_fifo, hello);
    try {
      fifo_backend().connect(server.connect_options());
      BOOST_ERROR("followed a symlink");
    } catch (const ConnectError& e) {
      BOOST_TEST(std::string(e.what()).find("symbolic link") != std::string::npos, e.what());
    }
    fs::remove(hello);
    // 3. A FIFO others may write to: refused as well.
    BOOST_REQUIRE(::mkfifo(hello.c_str(), 0600) == 0);
    BOOST_REQUIRE(::chmod(hello.c_str(), 0666) == 0);
    BOOST_CHECK_THROW(fifo_backend().connect(server.connect_options()), ConnectError);
    fs::remove(hello);
    fs::rename(moved, hello);

    // 4. A symlink where the server will create a client's .down: the server does not replace
    // or follow it; the hello is dropped and the file it points to untouched.
    const pid_t me = ::getpid();
    fs::create_symlink(target_file, server.dir() / wire::down_name(me, 0x77));
    UniqueFd h(::open(hello.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    const wire::HelloRecord r = wire::make_hello(me, 0x77);
    BOOST_REQUIRE_EQUAL(::write(h.get(), &r, sizeof r), static_cast<ssize_t>(sizeof r));
    auto [client, id] = server.connect_and_wait();  // the hello before this one has been handled
    BOOST_TEST(fs::is_symlink(server.dir() / wire::down_name(me, 0x77)));
    BOOST_TEST(!fs::exists(server.dir() / wire::up_name(me, 0x77)));
    std::string content;
    std::ifstream(target_file) >> content;
    BOOST_TEST(content == "precious");
    BOOST_TEST(transport_files(server.dir()) ==
               (std::vector<std::string>{wire::down_name(me, 0x77), wire::kHelloFifo}));
    fs::remove(server.dir() / wire::down_name(me, 0x77));
    server.ep().close(id);
  }
  fs::remove_all(elsewhere_rt.base());
}

BOOST_AUTO_TEST_CASE(a_client_that_never_gets_ready_is_dropped_after_the_deadline) {
  FifoServer server;
  UniqueFd h(::open((server.dir() / wire::kHelloFifo).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  const wire::HelloRecord r = wire::make_hello(::getpid(), 0x99);
  BOOST_REQUIRE_EQUAL(::write(h.get(), &r, sizeof r), static_cast<ssize_t>(sizeof r));
  const fs::path down = server.dir() / wire::down_name(::getpid(), 0x99);
  const auto until = std::chrono::steady_clock::now() + 2s;
  while (!fs::exists(down) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  BOOST_REQUIRE(fs::exists(down));
  const auto gone_by = std::chrono::steady_clock::now() + 8s;
  while (fs::exists(down) && std::chrono::steady_clock::now() < gone_by)
    std::this_thread::sleep_for(50ms);
  BOOST_TEST(!fs::exists(down));
  BOOST_TEST(transport_files(server.dir()) == std::vector<std::string>{wire::kHelloFifo});
  BOOST_TEST(!server.take([](const ServerEvent&) { return true; }, 10ms));
}

BOOST_AUTO_TEST_CASE(chatd_over_fifo_survives_a_client_killed_and_is_clean_after_sigterm) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, "fifo");
  std::vector<pid_t> pids{::getpid(), chatd->pid()};
  Process victim({binary("transport_peer").string(), "client", "fifo", rt.base().string(),
                  rt.instance(), "idle"});
  pids.push_back(victim.pid());
  BOOST_REQUIRE(victim.wait_out_contains("connected", 5s));
  victim.kill(SIGKILL);
  victim.wait(5s);
  BOOST_TEST(chatd->running());
  stop_and_check_clean(*chatd, rt, pids, 5s);
}

BOOST_AUTO_TEST_SUITE_END()

// Pitfalls of the `fifo` backend: a channel that must be two nameless pipes whatever the umask,
// a client that must not reach another's pipes, garbage in a client's own pipe, frames split
// across writes, a reader that vanished (EPIPE, not SIGPIPE), a grant that is not what it
// should be, a client that leaves at the door, and what a killed server leaves behind.
#define BOOST_TEST_MODULE fifo_transport
#include "transport/fifo/fifo.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "common/instance.hpp"
#include "common/os.hpp"
#include "tests/support/chat_process.hpp"
#include "tests/support/frames.hpp"
#include "tests/support/main_fixture.hpp"
#include "tests/support/server_harness.hpp"
#include "tests/support/support.hpp"
#include "transport/factory.hpp"
#include "transport/fifo/wire.hpp"
#include "transport/pid_watch.hpp"

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

  // What the door grants a client: its channel, not opened yet.
  ConnectOptions enter() const { return arrive(dir(), rt().instance(), deadline_after(5s)); }

  // Takes the kConnected of the client that entered last.
  transport::ClientId connected() {
    const auto e =
        take([](const ServerEvent& e) { return e.kind == ServerEvent::Kind::kConnected; });
    BOOST_REQUIRE(e);
    return e->client;
  }
};

// A client that writes what it likes into its own up pipe: it keeps a second writer on it, a
// copy of the descriptor the door handed over, next to a well-behaved connection.
struct HostileClient {
  std::unique_ptr<ClientConnection> conn;
  ClientId id = 0;
  UniqueFd up;

  explicit HostileClient(FifoServer& server) {
    ConnectOptions co = server.enter();
    BOOST_REQUIRE_EQUAL(co.pass.fds.size(), 2u);
    up.reset(::fcntl(co.pass.fds[0].get(), F_DUPFD_CLOEXEC, 0));
    BOOST_REQUIRE(up);
    conn = fifo_backend().connect(std::move(co));
    id = server.connected();
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

// The FIFOs anywhere under `dir`: what another process could open by name.
std::vector<std::string> fifos_under(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) == 0 && S_ISFIFO(st.st_mode)) {
      found.push_back(e.path().string());
    }
  }
  return found;
}

struct stat stat_of(int fd) {
  struct stat st {};
  BOOST_REQUIRE(::fstat(fd, &st) == 0);
  return st;
}

int access_mode(int fd) {
  return ::fcntl(fd, F_GETFL) & O_ACCMODE;
}

// Bytes a hostile client writes into its own up pipe, and what the server should say.
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
  // The retired kReady of the hello-FIFO handshake is a kind like any unknown one now.
  std::vector<std::byte> ready = {std::byte{0}, std::byte{0}, std::byte{2},
                                  wire::header_check(0, static_cast<wire::Kind>(2))};
  return {
      {"unknown kind", unknown, "unknown frame kind 9"},
      {"oversize length", oversize, "data frame of 4097 bytes"},
      {"empty data frame", header(wire::Kind::kData, 0), "data frame of 0 bytes"},
      {"bad check byte", bad_check, "check byte"},
      {"retired ready", ready, "unknown frame kind 2"},
      {"bye with payload", header(wire::Kind::kBye, 5), "control frame with 5 payload bytes"},
      {"ascii", bytes_of("GET / HTTP/1.0\r\n\r\n"), "frame"},
  };
}

// A grant as the door would deliver it, for checking what the client makes of it: two pipes
// of ours, the right description, this process as the server.
door::Pass forged_pass() {
  door::Pass pass;
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
  pass.socket.reset(sv[0]);
  ::close(sv[1]);
  pass.transport = "fifo";
  pass.server_pid = ::getpid();
  pass.server_uid = ::geteuid();
  pass.server_pidfd = open_pidfd(::getpid());
  pass.channel = {{"version", wire::kVersion}, {"fds", {wire::kUp, wire::kDown}}};
  int up[2], down[2];
  BOOST_REQUIRE(::pipe2(up, O_CLOEXEC | O_NONBLOCK) == 0);
  BOOST_REQUIRE(::pipe2(down, O_CLOEXEC | O_NONBLOCK) == 0);
  pass.fds.emplace_back(up[1]);
  pass.fds.emplace_back(down[0]);
  ::close(up[0]);
  ::close(down[1]);
  return pass;
}

ConnectOptions with_pass(door::Pass pass) {
  ConnectOptions co;
  co.pass = std::move(pass);
  return co;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(fifo)

BOOST_AUTO_TEST_CASE(the_channel_is_two_nameless_private_pipes_whatever_the_umask) {
  const mode_t old = ::umask(0777);  // the worst case: mkfifo creates mode 0000
  {
    FifoServer server;
    ConnectOptions co = server.enter();
    BOOST_TEST(co.pass.transport == "fifo");
    BOOST_REQUIRE_EQUAL(co.pass.fds.size(), 2u);
    const int wanted[] = {O_WRONLY, O_RDONLY};  // up: we write; down: we read
    for (std::size_t i = 0; i < 2; ++i) {
      const int fd = co.pass.fds[i].get();
      const struct stat st = stat_of(fd);
      BOOST_TEST(S_ISFIFO(st.st_mode));
      BOOST_TEST((st.st_mode & 07777) == 0600u);
      BOOST_TEST(st.st_uid == ::geteuid());
      BOOST_TEST(st.st_nlink == 0u);  // unlinked before the grant: no name leads to it
      BOOST_TEST(access_mode(fd) == wanted[i]);
      BOOST_TEST((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
      BOOST_TEST(::fcntl(fd, F_GETPIPE_SZ) <= static_cast<int>(kMaxTransportBufferBytes));
    }
    BOOST_TEST(stat_of(co.pass.fds[0].get()).st_ino != stat_of(co.pass.fds[1].get()).st_ino);
    auto client = fifo_backend().connect(std::move(co));
    const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
    BOOST_REQUIRE(c);
    BOOST_TEST(c->pid == ::getpid());
    BOOST_TEST(c->uid == ::geteuid());
    BOOST_TEST(server.round_trip(*client, c->client, "private"));
    // The door is the only name: nothing in the instance dir leads to a client's pipes.
    BOOST_TEST(transport_files(server.dir()) == std::vector<std::string>{door::kSocketName});
    BOOST_TEST(fifos_under(server.rt().base()).empty());
    // What objects() names for --cleanup is what exists: the door.
    BOOST_TEST(fs::is_socket(server.ep().objects().at("door").get<std::string>()));
    server.ep().close(c->client);
  }
  ::umask(old);
}

BOOST_AUTO_TEST_CASE(a_client_cannot_open_another_clients_fifos) {
  FifoServer server;
  ConnectOptions a_co = server.enter();
  const ClientId a_id = server.connected();
  BOOST_REQUIRE_EQUAL(a_co.pass.fds.size(), 2u);
  const struct stat a_up = stat_of(a_co.pass.fds[0].get());
  const struct stat a_down = stat_of(a_co.pass.fds[1].get());
  auto a = fifo_backend().connect(std::move(a_co));

  // Another client, granted after A: its pipes are not A's, and nothing anywhere under the
  // runtime base names a FIFO, A's or any other, that it could open.
  ConnectOptions b_co = server.enter();
  const ClientId b_id = server.connected();
  BOOST_REQUIRE_EQUAL(b_co.pass.fds.size(), 2u);
  for (const auto& fd : b_co.pass.fds) {
    const struct stat st = stat_of(fd.get());
    BOOST_TEST(st.st_ino != a_up.st_ino);
    BOOST_TEST(st.st_ino != a_down.st_ino);
  }
  BOOST_TEST(a_up.st_nlink == 0u);
  BOOST_TEST(a_down.st_nlink == 0u);
  BOOST_TEST(fifos_under(server.rt().base()).empty());
  for (const auto& e : fs::recursive_directory_iterator(server.rt().base())) {
    struct stat st {};
    BOOST_REQUIRE(::lstat(e.path().c_str(), &st) == 0);
    BOOST_TEST(!(st.st_dev == a_up.st_dev && st.st_ino == a_up.st_ino), e.path());
    BOOST_TEST(!(st.st_dev == a_down.st_dev && st.st_ino == a_down.st_ino), e.path());
  }
  auto b = fifo_backend().connect(std::move(b_co));
  // Each talks on its own pipes only.
  BOOST_TEST(server.round_trip(*a, a_id, "from a"));
  BOOST_TEST(server.round_trip(*b, b_id, "from b"));
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

BOOST_AUTO_TEST_CASE(garbage_from_one_client_disconnects_it_while_another_keeps_chatting) {
  FifoServer server;
  auto [good, good_id] = server.connect_and_wait();
  std::atomic<bool> stop{false};
  std::atomic<int> exchanged{0}, failed{0};
  std::thread chatter([&, &good = good, good_id = good_id] {
    while (!stop) {
      if (server.round_trip(*good, good_id, "frame " + std::to_string(exchanged.load()))) {
        ++exchanged;
      } else {
        ++failed;
      }
    }
  });
  // The hostile client never opens its channel as a connection: it writes into the pipe the
  // door handed it, a few valid frames first, then garbage.
  ConnectOptions co = server.enter();
  const ClientId bad_id = server.connected();
  BOOST_REQUIRE_EQUAL(co.pass.fds.size(), 2u);
  const int up = co.pass.fds[0].get();
  std::vector<std::byte> valid = header(wire::Kind::kData, 2);
  valid.push_back(std::byte{'o'});
  valid.push_back(std::byte{'k'});
  for (int i = 0; i < 3; ++i) {
    write_all(up, {reinterpret_cast<const char*>(valid.data()), valid.size()}, "up pipe");
    const auto e = server.take(Kind::kFrame, bad_id);
    BOOST_REQUIRE(e);
    BOOST_TEST(text_of(e->frame) == "ok");
  }
  std::string garbage(3000, '\0');
  for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>(i * 7 + 3);
  write_all(up, garbage, "up pipe");
  const auto d = server.take(Kind::kDisconnected, bad_id);
  BOOST_REQUIRE_MESSAGE(d, "the offender was not disconnected");
  BOOST_TEST((d->gone == ServerEvent::Gone::kMalformed));
  server.ep().close(bad_id);
  // Its down pipe ends: the server closed its writing end.
  char byte;
  const auto until = std::chrono::steady_clock::now() + 5s;
  ssize_t n = -1;
  while ((n = ::read(co.pass.fds[1].get(), &byte, 1)) < 0 && errno == EAGAIN &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  BOOST_TEST(n == 0);
  // The other client kept exchanging frames all along, and still does.
  const int before = exchanged.load();
  const auto later = std::chrono::steady_clock::now() + 5s;
  while (exchanged.load() < before + 20 && std::chrono::steady_clock::now() < later) {
    std::this_thread::sleep_for(5ms);
  }
  stop = true;
  chatter.join();
  BOOST_TEST(failed.load() == 0);
  BOOST_TEST(exchanged.load() >= before + 20);
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
  BOOST_TEST(c->pid == peer.pid());
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

BOOST_AUTO_TEST_CASE(a_grant_that_is_not_two_pipes_of_the_server_is_refused) {
  // The control: a forged grant the client accepts.
  BOOST_CHECK_NO_THROW(fifo_backend().connect(with_pass(forged_pass())));
  struct Case {
    std::string name;
    std::function<void(door::Pass&)> spoil;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"old version", [](door::Pass& p) { p.channel["version"] = 1; }, "channel description"},
      {"no description", [](door::Pass& p) { p.channel = "fifo"; }, "channel description"},
      {"ends swapped",
       [](door::Pass& p) {
         p.channel["fds"] = {wire::kDown, wire::kUp};
       },
       "channel description"},
      {"one descriptor", [](door::Pass& p) { p.fds.pop_back(); }, "1 descriptors instead of 2"},
      {"three descriptors",
       [](door::Pass& p) { p.fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC)); },
       "3 descriptors instead of 2"},
      {"a file, not a pipe",
       [](door::Pass& p) { p.fds[1].reset(::open("/dev/null", O_RDONLY | O_CLOEXEC)); },
       "not a pipe"},
      {"up open for reading", [](door::Pass& p) { std::swap(p.fds[0], p.fds[1]); },
       "not open for writing"},
      {"one pipe both ways",
       [](door::Pass& p) {
         int loop[2];
         BOOST_REQUIRE(::pipe2(loop, O_CLOEXEC) == 0);
         p.fds[0].reset(loop[1]);
         p.fds[1].reset(loop[0]);
       },
       "one pipe"},
      {"someone else's pipes", [](door::Pass& p) { p.server_uid = ::geteuid() + 1; },
       "not the server's"},
      {"another transport", [](door::Pass& p) { p.transport = "uds"; }, "transport 'uds'"},
      {"no door", [](door::Pass& p) { p.socket.reset(); }, "door"},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.name) {
      door::Pass pass = forged_pass();
      c.spoil(pass);
      try {
        fifo_backend().connect(with_pass(std::move(pass)));
        BOOST_ERROR("accepted a grant with " + c.name);
      } catch (const ConnectError& e) {
        BOOST_TEST((e.kind() == ConnectError::Kind::kOther));
        BOOST_TEST(std::string(e.what()).find(c.says) != std::string::npos, e.what());
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(a_client_that_leaves_at_the_door_costs_nothing) {
  FifoServer server;
  auto [good, good_id] = server.connect_and_wait();
  // Knocks and runs before the answer: the grant finds nobody, or lands in a closed socket.
  for (int i = 0; i < 10; ++i) {
    UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    const UnixAddress addr = unix_address(server.dir() / door::kSocketName);
    BOOST_REQUIRE(::connect(s.get(), addr.get(), addr.length) == 0);
  }
  // Takes its grant and drops it unopened: its pipes end without a goodbye.
  std::vector<ClientId> dropped;
  for (int i = 0; i < 5; ++i) {
    server.enter();
    dropped.push_back(server.connected());
  }
  for (const ClientId id : dropped) {
    const auto d = server.take(Kind::kDisconnected, id);
    BOOST_REQUIRE_MESSAGE(d, "a dropped grant was not seen");
    BOOST_TEST((d->gone == ServerEvent::Gone::kClosed));
    server.ep().close(id);
  }
  // Whatever the knockers got, each is gone, and closed here if it was connected at all.
  while (const auto c =
             server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; }, 200ms)) {
    BOOST_TEST(server.take(Kind::kDisconnected, c->client).has_value());
    server.ep().close(c->client);
  }
  BOOST_TEST(server.round_trip(*good, good_id, "still here"));
  auto [late, late_id] = server.connect_and_wait();
  BOOST_TEST(server.round_trip(*late, late_id, "newcomer"));
  BOOST_TEST(fifos_under(server.rt().base()).empty());
  server.ep().close(good_id);
  server.ep().close(late_id);
}

BOOST_AUTO_TEST_CASE(past_its_connections_the_door_says_server_full) {
  FifoServer server(1);  // chatd's own limit; the transport holds a few more connections
  std::vector<std::pair<std::unique_ptr<ClientConnection>, ClientId>> in;
  for (;;) {
    try {
      in.push_back({fifo_backend().connect(server.enter()), server.connected()});
    } catch (const ConnectError& e) {
      BOOST_TEST((e.kind() == ConnectError::Kind::kRefused));
      BOOST_TEST(std::string(e.what()).find("server_full") != std::string::npos, e.what());
      break;
    }
    BOOST_REQUIRE_MESSAGE(in.size() <= 64u, "no limit");
  }
  BOOST_TEST(in.size() > 1u);
  BOOST_TEST(fifos_under(server.rt().base()).empty());
  // A connection closed is a place free again.
  server.ep().close(in.back().second);
  in.pop_back();
  auto [again, again_id] = server.connect_and_wait();
  BOOST_TEST(server.round_trip(*again, again_id, "in again"));
  server.ep().close(again_id);
  for (const auto& [client, id] : in) server.ep().close(id);
}

BOOST_AUTO_TEST_CASE(cleanup_removes_the_fifos_a_killed_server_left_and_nothing_else) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const std::vector<std::string> leftovers = {"fifo-0123456789abcdef.up",
                                              "fifo-0123456789abcdef.down", "hello.fifo",
                                              "4242-00000000000000aa.down", ".4242-00.up.tmp"};
  for (const auto& name : leftovers) {
    BOOST_REQUIRE(::mkfifo((dir.path() / name).c_str(), 0600) == 0);
  }
  const std::vector<std::string> kept = {"notes.up", "other.fifo-like"};
  for (const auto& name : kept) std::ofstream(dir.path() / name) << "not a FIFO";
  BOOST_REQUIRE(::mkfifo((dir.path() / "someone.else").c_str(), 0600) == 0);
  const auto removed = fifo_backend().cleanup({dir.path(), dead_pid(), nlohmann::json()});
  BOOST_TEST(removed.size() == leftovers.size());
  for (const auto& name : leftovers) BOOST_TEST(!fs::exists(dir.path() / name), name);
  for (const auto& name : kept) BOOST_TEST(fs::exists(dir.path() / name), name);
  BOOST_TEST(fs::exists(dir.path() / "someone.else"));
  // Nothing there at all is fine too.
  fs::remove_all(rt.base() / "nowhere");
  BOOST_TEST(fifo_backend().cleanup({rt.base() / "nowhere", 0, nlohmann::json()}).empty());
  dir.remove();
  check_no_leftovers(rt, {::getpid()});
}

BOOST_AUTO_TEST_CASE(names_planted_in_the_instance_dir_are_neither_followed_nor_used) {
  TempRuntime elsewhere_rt;  // a place for what the symlink points to
  fs::create_directories(elsewhere_rt.dir());
  const fs::path target_file = elsewhere_rt.dir() / "target.txt";
  { std::ofstream(target_file) << "precious"; }
  {
    FifoServer server;
    // Names like the channels', planted before any client comes: a symlink, and a FIFO anyone
    // could open. The server never opens a name it did not just make itself.
    const fs::path link = server.dir() / "fifo-0000000000000000.up";
    const fs::path open_fifo = server.dir() / "fifo-0000000000000000.down";
    fs::create_symlink(target_file, link);
    BOOST_REQUIRE(::mkfifo(open_fifo.c_str(), 0600) == 0);
    BOOST_REQUIRE(::chmod(open_fifo.c_str(), 0666) == 0);
    for (int i = 0; i < 3; ++i) {
      auto [client, id] = server.connect_and_wait();
      BOOST_TEST(server.round_trip(*client, id, "through the planted names"));
      server.ep().close(id);
    }
    std::string content;
    std::ifstream(target_file) >> content;
    BOOST_TEST(content == "precious");
    BOOST_TEST(fs::is_symlink(link));
    BOOST_TEST(fifos_under(server.dir()) == std::vector<std::string>{open_fifo.string()});
    fs::remove(link);
    fs::remove(open_fifo);
  }
  fs::remove_all(elsewhere_rt.base());
}

BOOST_AUTO_TEST_CASE(a_client_of_another_account_gets_its_channel_through_the_door) {
  constexpr uid_t kNobody = 65534;
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("skipped: running a client as another account needs root");
    return;
  }
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  // As chatd --access=all makes them: the dirs searchable, the door writable, by everyone.
  fs::permissions(rt.base(), static_cast<fs::perms>(0711));
  fs::permissions(dir.path(), static_cast<fs::perms>(0711));
  ListenOptions lo;
  lo.dir = dir.path();
  lo.instance = rt.instance();
  lo.max_clients = 4;
  lo.access = AccessPolicy::parse("all");
  auto ep = fifo_backend().listen(lo);
  const auto next = [&](Kind kind) {
    std::vector<ServerEvent> events;
    const auto until = deadline_after(5s);
    while (Clock::now() < until) {
      ep->poll(events, deadline_after(100ms));
      for (auto& e : events) {
        if (e.kind == kind) return std::optional<ServerEvent>(std::move(e));
      }
      events.clear();
    }
    return std::optional<ServerEvent>();
  };
  std::vector<pid_t> pids{::getpid()};
  {
    Process peer({"/usr/bin/setpriv", "--reuid=" + std::to_string(kNobody),
                  "--regid=" + std::to_string(kNobody), "--clear-groups",
                  binary("transport_peer").string(), "client", "fifo", rt.base().string(),
                  rt.instance(), "echo"});
    pids.push_back(peer.pid());
    const auto c = next(Kind::kConnected);
    BOOST_REQUIRE_MESSAGE(c, "the other account's client did not connect: " + peer.err());
    BOOST_TEST(c->uid == kNobody);  // the kernel's word
    BOOST_TEST(c->pid == peer.pid());
    // Its pipes are ours (0600) and nameless: it reaches them only through what it was handed.
    BOOST_TEST(fifos_under(rt.base()).empty());
    BOOST_TEST((ep->send(c->client, frame_of("across accounts")) == SendResult::kSent));
    const auto back = next(Kind::kFrame);
    BOOST_REQUIRE(back);
    BOOST_TEST(text_of(back->frame) == "across accounts");
    ep->close(c->client);
    BOOST_TEST(peer.wait_out_contains("closed server_alive=1", 5s), peer.out() + peer.err());
    BOOST_TEST(peer.exit_code(5s) == 0);
  }
  ep.reset();
  dir.remove();
  check_no_leftovers(rt, pids);
}

BOOST_AUTO_TEST_CASE(chatd_over_fifo_survives_a_client_killed_and_is_clean_after_sigterm) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, "fifo");
  std::vector<pid_t> pids{::getpid(), chatd->pid()};
  Process victim({binary("transport_peer").string(), "client", "fifo", rt.base().string(),
                  rt.instance(), "idle"});
  pids.push_back(victim.pid());
  BOOST_REQUIRE(victim.wait_out_contains("connected", 5s));
  BOOST_TEST(fifos_under(rt.base()).empty());
  victim.kill(SIGKILL);
  victim.wait(5s);
  BOOST_TEST(chatd->running());
  stop_and_check_clean(*chatd, rt, pids, 5s);
}

BOOST_AUTO_TEST_SUITE_END()

// Pitfalls of the `fifo` backend: garbage in the hello FIFO and in a client's own FIFO, frames
// split across writes, a reader that vanished (EPIPE, not SIGPIPE), a FIFO with no reader
// (ENXIO), planted symlinks and foreign FIFOs, and the umask.
#define BOOST_TEST_MODULE fifo_transport
#include "transport/fifo/fifo.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <set>
#include <thread>

#include "common/instance.hpp"
#include "common/log.hpp"
#include "common/protocol.hpp"
#include "tests/support/main_fixture.hpp"
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

Frame frame_of(const std::string& s) {
  Frame f(s.size());
  std::memcpy(f.data(), s.data(), s.size());
  return f;
}

std::string text_of(const Frame& f) {
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

const Backend& fifo_backend() {
  return *find_backend("fifo");
}

// An in-process fifo server endpoint with its poll loop on a thread of its own. Its events
// are kept until a test takes them. On destruction it removes everything and checks that
// nothing is left.
class Endpoint {
 public:
  explicit Endpoint(std::size_t max_clients = 16)
      : dir_(InstanceDir::acquire(rt_.base(), rt_.instance())) {
    ListenOptions lo;
    lo.dir = dir_.path();
    lo.instance = rt_.instance();
    lo.logger = &logger_;  // what the endpoint complains about shows in the test log
    lo.max_clients = max_clients;
    ep_ = fifo_backend().listen(lo);
    dir_.publish({rt_.instance(), "fifo", ::getpid(), protocol::kVersion, ep_->objects()});
    thread_ = std::thread([this] {
      std::vector<ServerEvent> evs;
      while (!stop_) {
        evs.clear();
        ep_->poll(evs, deadline_after(100ms));
        std::lock_guard lock(mutex_);
        for (auto& e : evs) events_.push_back(std::move(e));
        if (!evs.empty()) cv_.notify_all();
      }
    });
  }

  ~Endpoint() {
    stop_ = true;
    ep_->wake();
    thread_.join();
    ep_.reset();
    dir_.remove();
    const auto left = leftovers(rt_, pids_);
    BOOST_CHECK_MESSAGE(left.empty(), "left behind: " + (left.empty() ? "" : left.front()));
  }

  ServerEndpoint& ep() { return *ep_; }
  const TempRuntime& rt() const { return rt_; }
  fs::path dir() const { return dir_.path(); }
  void also_check_pid(pid_t p) { pids_.push_back(p); }

  ConnectOptions connect_options() const {
    return {dir_.path(), rt_.instance(), ::getpid(), ep_->objects(), deadline_after(5s)};
  }

  // Connects a client and waits for the server to report it.
  std::pair<std::unique_ptr<ClientConnection>, ClientId> connect() {
    auto c = fifo_backend().connect(connect_options());
    const auto e = take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
    BOOST_REQUIRE(e);
    return {std::move(c), e->client};
  }

  // Removes and returns the first event (already reported or still to come) matching `pred`;
  // other events stay for later.
  std::optional<ServerEvent> take(const std::function<bool(const ServerEvent&)>& pred,
                                  std::chrono::milliseconds timeout = 5000ms) {
    std::unique_lock lock(mutex_);
    std::optional<ServerEvent> found;
    cv_.wait_for(lock, timeout, [&] {
      for (auto it = events_.begin(); it != events_.end(); ++it) {
        if (pred(*it)) {
          found = std::move(*it);
          events_.erase(it);
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::optional<ServerEvent> take(Kind kind, ClientId id, std::chrono::milliseconds t = 5000ms) {
    return take([=](const ServerEvent& e) { return e.kind == kind && e.client == id; }, t);
  }

  // A frame from the client to the server and back.
  bool round_trip(ClientConnection& c, ClientId id, const std::string& text) {
    if (c.send(frame_of(text), deadline_after(5s)) != SendResult::kSent) return false;
    const auto e = take(Kind::kFrame, id);
    if (!e || text_of(e->frame) != text) return false;
    if (ep_->send(id, e->frame) != SendResult::kSent) return false;
    Frame f;
    return c.receive(f, deadline_after(5s)) == ReceiveResult::kFrame && text_of(f) == text;
  }

 private:
  Logger logger_{"fifo_test", LogLevel::kWarn};
  TempRuntime rt_;
  InstanceDir dir_;
  std::unique_ptr<ServerEndpoint> ep_;
  std::vector<pid_t> pids_{::getpid()};
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<ServerEvent> events_;
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

  explicit HostileClient(Endpoint& server) {
    const auto before = fds_named(".up (deleted)");
    std::tie(conn, id) = server.connect();
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

// A pid that certainly names no process right now: a child we have reaped.
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
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
    Endpoint server;
    struct stat st {};
    BOOST_REQUIRE(::lstat((server.dir() / wire::kHelloFifo).c_str(), &st) == 0);
    BOOST_TEST(S_ISFIFO(st.st_mode));
    BOOST_TEST((st.st_mode & 07777) == 0600u);
    auto [client, id] = server.connect();
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
  Endpoint server;
  auto [a, a_id] = server.connect();
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
  auto [b, b_id] = server.connect();
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
  Endpoint server;
  auto [good, good_id] = server.connect();
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
  Endpoint server;
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
  Endpoint server;
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
  auto [client, id] = server.connect();
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
    ConnectOptions co{dir.path(), rt.instance(), ::getpid(), nlohmann::json::object(),
                      deadline_after(2s)};
    try {
      fifo_backend().connect(co);
      BOOST_ERROR("connected to a FIFO nobody reads");
    } catch (const ConnectError& e) {
      BOOST_TEST((e.kind() == ConnectError::Kind::kNoServer));
      BOOST_TEST(std::string(e.what()).find("ENXIO") != std::string::npos, e.what());
    }
    dir.remove();
  }
  BOOST_TEST(leftovers(rt, {::getpid()}).empty());
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
    ListenOptions lo{dir.path(), rt.instance(), 4, nullptr};
    BOOST_CHECK_THROW(fifo_backend().listen(lo), std::system_error);
    dir.remove();
  }
  {
    Endpoint server;
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
    auto [client, id] = server.connect();  // the hello before this one has been handled
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
  Endpoint server;
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
  chatd->kill(SIGTERM);
  const auto code = chatd->wait(5s);
  BOOST_TEST((code && *code == 0));
  const auto left = leftovers(rt, pids);
  BOOST_TEST(left.empty(), "left behind: " + (left.empty() ? "" : left.front()));
}

BOOST_AUTO_TEST_CASE(a_burst_of_clients_all_get_in) {
  // More clients at once than handshakes may be in progress: the rest wait, none is dropped.
  Endpoint server(128);
  constexpr std::size_t kClients = 80;
  std::vector<std::unique_ptr<ClientConnection>> clients(kClients);
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  {
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < kClients; ++i) {
      threads.emplace_back([&, i] {
        try {
          clients[i] = fifo_backend().connect(server.connect_options());
        } catch (const std::exception& e) {
          std::lock_guard lock(errors_mutex);
          errors.push_back(e.what());
        }
      });
    }
  }
  BOOST_TEST(errors.empty(), (errors.empty() ? "" : errors.front()));
  std::vector<ClientId> ids;
  while (ids.size() < kClients) {
    const auto e = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
    if (!e) break;
    ids.push_back(e->client);
  }
  BOOST_TEST(ids.size() == kClients);
  for (const ClientId id : ids) server.ep().close(id);
}

BOOST_AUTO_TEST_SUITE_END()

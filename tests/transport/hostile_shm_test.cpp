// A hostile client of the shared-memory backends: it enters through the door like any client
// (transport::arrive, then shm::Attachment on what it was granted) and then writes what it
// likes into the memory the server reads, rings its bell, truncates its segment. The server
// must drop only that client, say why, and carry on serving the others.
#define BOOST_TEST_MODULE hostile_shm
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <random>

#include "tests/support/chat_process.hpp"
#include "tests/support/frames.hpp"
#include "tests/support/main_fixture.hpp"
#include "tests/support/server_harness.hpp"
#include "transport/names.hpp"
#include "transport/shm/engine.hpp"
#include "transport/shm/layout.hpp"
#include "transport/signal/sysv_shm.hpp"

namespace bdata = boost::unit_test::data;
using namespace chat;
using namespace chat::transport;
using namespace chat::test;
using Kind = ServerEvent::Kind;

namespace {

// A well-behaved client next to the hostile one: after the attack it must still be served.
struct Bystander {
  std::unique_ptr<ClientConnection> connection;
  ClientId id = 0;
};

Bystander connect_bystander(ServerHarness& server) {
  Bystander b;
  b.connection = server.connect();
  const auto c = server.next(Kind::kConnected);
  BOOST_REQUIRE(c);
  b.id = c->client;
  return b;
}

void check_bystander_is_served(ServerHarness& server, Bystander& b) {
  BOOST_REQUIRE(
      (b.connection->send(frame_of("still here"), deadline_after(5s)) == SendResult::kSent));
  const auto f =
      server.next([&](const ServerEvent& e) { return e.kind == Kind::kFrame && e.client == b.id; });
  BOOST_REQUIRE_MESSAGE(f, "the bystander's frame did not arrive after the attack");
  BOOST_REQUIRE((server.ep().send(b.id, frame_of("ok")) == SendResult::kSent));
  Frame got;
  BOOST_REQUIRE((b.connection->receive(got, deadline_after(5s)) == ReceiveResult::kFrame));
  server.ep().close(b.id);
}

// A hostile client: what it got at the door (its door connection stays open in `entry`), its
// mappings, and the id the server gave it.
struct Hostile {
  ConnectOptions entry;
  std::optional<shm::Attachment> att;
  ClientId id = 0;
  shm::ClientBlock& block() { return att->block(); }
};

// Enters through the door and maps the grant, keeping a copy of the segment's descriptor in
// `segment_fd` if the backend passes one.
Hostile attach_hostile(ServerHarness& server, shm::Flavor& flavor, UniqueFd* segment_fd = nullptr) {
  Hostile h;
  h.entry = server.connect_options();
  if (segment_fd != nullptr && flavor.memory->passes_fd()) {
    BOOST_REQUIRE(!h.entry.pass.fds.empty());
    segment_fd->reset(::fcntl(h.entry.pass.fds[0].get(), F_DUPFD_CLOEXEC, 0));
  }
  h.att.emplace(shm::Attachment::attach(h.entry, flavor));
  const auto c = server.next(Kind::kConnected);
  BOOST_REQUIRE(c);
  h.id = c->client;
  return h;
}

// Expects the server to report `id` as malformed, and releases it.
void expect_malformed(ServerHarness& server, ClientId id) {
  const auto d = server.next(
      [&](const ServerEvent& e) { return e.kind == Kind::kDisconnected && e.client == id; });
  BOOST_REQUIRE_MESSAGE(d, "the server did not drop the hostile client");
  BOOST_TEST((d->gone == ServerEvent::Gone::kMalformed));
  BOOST_TEST(!d->detail.empty());
  BOOST_TEST_MESSAGE("server said: " << d->detail);
  server.ep().close(id);
}

// Writes a u32 length prefix at the up ring's tail and publishes `published` bytes.
void publish_length(shm::ClientBlock& b, std::uint32_t length, std::uint64_t published) {
  const std::uint64_t tail = b.up.tail.load();
  for (int i = 0; i < 4; ++i) {
    b.up_data[(tail + i) % shm::kUpRingBytes] =
        std::byte{static_cast<std::uint8_t>(length >> (8 * i))};
  }
  b.up.tail.store(tail + published);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(hostile_shm)

BOOST_DATA_TEST_CASE(bad_length_prefixes, bdata::make(shm_backends()), name) {
  const Backend& backend = *find_backend(name);
  ServerHarness server(backend);
  auto bystander = connect_bystander(server);
  auto flavor = backend.shm_flavor(server.rt().dir());
  const std::vector<std::pair<std::uint32_t, std::uint64_t>> cases = {
      {0, 4},                                        // an empty frame
      {kMaxFrameBytes + 1, 4 + kMaxFrameBytes + 1},  // longer than any frame
      {0xFFFFFFFFu, 64},                             // absurd
      {100, 4 + 50},                                 // longer than what was published
  };
  for (const auto& [length, published] : cases) {
    auto h = attach_hostile(server, flavor);
    publish_length(h.block(), length, published);
    h.att->ring_server();
    expect_malformed(server, h.id);
  }
  check_bystander_is_served(server, bystander);
}

BOOST_DATA_TEST_CASE(impossible_ring_positions, bdata::make(shm_backends()), name) {
  const Backend& backend = *find_backend(name);
  ServerHarness server(backend);
  auto bystander = connect_bystander(server);
  auto flavor = backend.shm_flavor(server.rt().dir());
  const std::vector<std::uint64_t> tails = {
      shm::kUpRingBytes + 1,  // more than the ring holds
      ~std::uint64_t{0},      // "behind" the head
      2,                      // a torn length prefix
      std::uint64_t{1} << 62,
  };
  for (const std::uint64_t tail : tails) {
    auto h = attach_hostile(server, flavor);
    h.block().up.tail.store(tail);
    h.att->ring_server();
    expect_malformed(server, h.id);
  }
  // A consumer position the server never published: its next send fails, the client is
  // dropped.
  auto h = attach_hostile(server, flavor);
  h.block().down.head.store(std::uint64_t{1} << 40);
  BOOST_TEST((server.ep().send(h.id, frame_of("x")) == SendResult::kGone));
  expect_malformed(server, h.id);
  check_bystander_is_served(server, bystander);
}

BOOST_DATA_TEST_CASE(random_garbage_in_rings_and_header, bdata::make(shm_backends()), name) {
  const Backend& backend = *find_backend(name);
  ServerHarness server(backend);
  auto bystander = connect_bystander(server);
  auto flavor = backend.shm_flavor(server.rt().dir());
  std::mt19937_64 rng(12345);
  for (int round = 0; round < 30; ++round) {
    auto h = attach_hostile(server, flavor);
    const ClientId id = h.id;
    shm::ClientBlock& b = h.block();
    // Everything the client can write except its own sleeping places: header fields, both
    // ring controls and both rings' bytes.
    const auto scribble = [&](void* p, std::size_t n) {
      auto* bytes = static_cast<unsigned char*>(p);
      for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<unsigned char>(rng());
    };
    scribble(&b.up, sizeof b.up);
    scribble(&b.down, sizeof b.down);
    scribble(b.up_data, sizeof b.up_data);
    scribble(b.down_data, sizeof b.down_data);
    if (round % 2) scribble(&b.client_closed, sizeof b.client_closed);
    h.att->ring_server();
    // The server reports the client gone (malformed, or closed if the garbage said so)...
    const auto d = server.next(
        [&](const ServerEvent& e) { return e.kind == Kind::kDisconnected && e.client == id; });
    BOOST_REQUIRE_MESSAGE(d, "round " << round << ": the server did not drop the client");
    server.ep().close(id);
  }
  // ...and nothing of it reached anyone else.
  check_bystander_is_served(server, bystander);
}

// Everything the client holds besides its segment: its bell eventfd (rung without end and
// filled to its limit), the server's bell page (which it must not be able to write), and its
// door connection (junk the server never reads). The others are served throughout.
BOOST_DATA_TEST_CASE(garbage_on_the_bell_and_the_door, bdata::make(shm_backends()), name) {
  const Backend& backend = *find_backend(name);
  ServerHarness server(backend);
  ConnectOptions raw = server.connect_options();
  const auto raw_id = server.next(Kind::kConnected);
  BOOST_REQUIRE(raw_id);
  const std::size_t bells = raw.pass.fds.size();
  const int page = raw.pass.fds[bells - 2].get();
  const int event = raw.pass.fds[bells - 1].get();
  // The bell page: no writable mapping, no write(2), no resizing.
  BOOST_TEST(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, page, 0) == MAP_FAILED);
  const char junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  BOOST_TEST(::pwrite(page, junk, sizeof junk, 0) < 0);
  BOOST_TEST(::ftruncate(page, 0) != 0);
  void* ro = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, page, 0);
  BOOST_REQUIRE(ro != MAP_FAILED);
  BOOST_TEST(::mprotect(ro, 4096, PROT_READ | PROT_WRITE) != 0);
  ::munmap(ro, 4096);
  // Its eventfd: at its limit (the server drains it), then rung by a thread without end.
  const std::uint64_t max = 0xfffffffffffffffeULL;
  BOOST_TEST(::write(event, &max, sizeof max) == 8);
  std::atomic<bool> stop{false};
  std::thread ringer([&] {
    const std::uint64_t one = 1;
    while (!stop) [[maybe_unused]] ssize_t w = ::write(event, &one, sizeof one);
  });
  // Junk on the door connection.
  for (int i = 0; i < 100; ++i) ::send(raw.pass.socket.get(), junk, sizeof junk, MSG_DONTWAIT);
  auto bystander = connect_bystander(server);
  for (int i = 0; i < 20; ++i) {
    const auto start = Clock::now();
    BOOST_REQUIRE(server.round_trip(*bystander.connection, bystander.id, "ping"));
    BOOST_TEST((Clock::now() - start < 250ms));
  }
  stop = true;
  ringer.join();
  check_bystander_is_served(server, bystander);
  server.ep().close(raw_id->client);
}

// A client that truncates the segment the server maps would make the server take SIGBUS. A
// memfd (cond) is sealed against it; a file (mmap) can be truncated, and the server's guard
// turns the fault into zero pages and drops that client; SysV memory (signal) cannot shrink.
BOOST_DATA_TEST_CASE(a_truncated_segment_costs_only_its_client, bdata::make(shm_backends()), name) {
  const Backend& backend = *find_backend(name);
  ServerHarness server(backend);
  auto bystander = connect_bystander(server);
  auto flavor = backend.shm_flavor(server.rt().dir());
  for (int round = 0; round < 3; ++round) {
    UniqueFd fd;
    auto h = attach_hostile(server, flavor, &fd);
    if (!fd) {
      BOOST_TEST_MESSAGE(name << ": no descriptor to truncate");
      break;
    }
    if (::ftruncate(fd.get(), 0) != 0) {
      BOOST_TEST_MESSAGE(name << ": ftruncate refused: " << std::strerror(errno));
      BOOST_TEST(errno == EPERM);  // sealed
      server.ep().close(h.id);
      break;
    }
    // The server touches the segment at once: its re-checks read the up ring, its sends
    // write the down ring. The hostile mapping is not ours to touch any more.
    server.ep().send(h.id, frame_of("into the void"));
    h.att->ring_server_always();
    expect_malformed(server, h.id);
  }
  check_bystander_is_served(server, bystander);
}

// What one client was granted is nobody else's to open: nothing of it has a name left once
// the grant is through (no /dev/shm entry, no file in the runtime dir, a SysV segment already
// removed, reachable only while attached), and what is passed is private to the server's
// account.
BOOST_DATA_TEST_CASE(a_granted_segment_has_no_name_left, bdata::make(shm_backends()), name) {
  const Backend& backend = *find_backend(name);
  ServerHarness server(backend);
  auto [client, id] = server.connect_and_wait();
  ConnectOptions raw = server.connect_options();
  const auto raw_id = server.next(Kind::kConnected);
  BOOST_REQUIRE(raw_id);
  for (const auto& entry : std::filesystem::directory_iterator(server.dir())) {
    const std::string file = entry.path().filename().string();
    BOOST_TEST(file.rfind("mmap.", 0) != 0, file << " is still in the runtime dir");
  }
  const std::string tag = "ipchat." + transport::instance_tag(server.dir());
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string file = entry.path().filename().string();
    BOOST_TEST(file.rfind(tag, 0) != 0, file << " is in /dev/shm");
  }
  if (raw.pass.channel.contains(sig::kChannelShmid)) {
    const shmid_ds ds = sig::stat_sysv_segment(raw.pass.channel[sig::kChannelShmid].get<int>());
    BOOST_TEST((ds.shm_perm.mode & SHM_DEST) != 0);
    BOOST_TEST((ds.shm_perm.mode & 0777) == 0600u);
  } else {
    struct stat st {};
    BOOST_REQUIRE(::fstat(raw.pass.fds[0].get(), &st) == 0);
    BOOST_TEST((st.st_mode & 0777) == 0600u);
  }
  BOOST_TEST(server.round_trip(*client, id, "mine alone"));
  server.ep().close(id);
  server.ep().close(raw_id->client);
}

BOOST_AUTO_TEST_SUITE_END()

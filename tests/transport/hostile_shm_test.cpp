// A hostile client of the shared-memory backends: it does the handshake like any client
// (shm::Attachment) and then writes what it likes into the memory the server reads. The
// server must drop only that client, say why, and carry on serving the others.
#define BOOST_TEST_MODULE hostile_shm
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <random>

#include "tests/support/chat_process.hpp"
#include "tests/support/frames.hpp"
#include "tests/support/main_fixture.hpp"
#include "tests/support/server_harness.hpp"
#include "transport/shm/engine.hpp"
#include "transport/shm/layout.hpp"

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

// Attaches a hostile client and returns it with the id the server gave it.
std::pair<shm::Attachment, ClientId> attach_hostile(ServerHarness& server, shm::Flavor& flavor) {
  auto att = shm::Attachment::attach(server.connect_options(), flavor);
  const auto c = server.next(Kind::kConnected);
  BOOST_REQUIRE(c);
  return {std::move(att), c->client};
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
    auto [att, id] = attach_hostile(server, flavor);
    publish_length(att.block(), length, published);
    att.ring_server();
    expect_malformed(server, id);
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
    auto [att, id] = attach_hostile(server, flavor);
    att.block().up.tail.store(tail);
    att.ring_server();
    expect_malformed(server, id);
  }
  // A consumer position the server never published: its next send fails, the client is
  // dropped.
  auto [att, id] = attach_hostile(server, flavor);
  att.block().down.head.store(std::uint64_t{1} << 40);
  BOOST_TEST((server.ep().send(id, frame_of("x")) == SendResult::kGone));
  expect_malformed(server, id);
  check_bystander_is_served(server, bystander);
}

BOOST_DATA_TEST_CASE(random_garbage_in_rings_and_header, bdata::make(shm_backends()), name) {
  const Backend& backend = *find_backend(name);
  ServerHarness server(backend);
  auto bystander = connect_bystander(server);
  auto flavor = backend.shm_flavor(server.rt().dir());
  std::mt19937_64 rng(12345);
  for (int round = 0; round < 30; ++round) {
    auto [att, id] = attach_hostile(server, flavor);
    shm::ClientBlock& b = att.block();
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
    att.ring_server();
    // The server reports the client gone (malformed, or closed if the garbage said so)...
    const auto d = server.next(
        [&](const ServerEvent& e) { return e.kind == Kind::kDisconnected && e.client == id; });
    BOOST_REQUIRE_MESSAGE(d, "round " << round << ": the server did not drop the client");
    server.ep().close(id);
  }
  // ...and nothing of it reached anyone else.
  check_bystander_is_served(server, bystander);
}

BOOST_DATA_TEST_CASE(garbage_in_the_hello_table, bdata::make(shm_backends()), name) {
  const Backend& backend = *find_backend(name);
  ServerHarness server(backend);
  auto flavor = backend.shm_flavor(server.rt().dir());
  auto [att, id] = attach_hostile(server, flavor);
  std::mt19937 rng(7);
  shm::CtlBlock& ctl = att.ctl();
  // Half the entries: impossible states, pids that do not exist or are not clients.
  for (std::size_t i = 0; i < shm::kHelloEntries / 2; ++i) {
    ctl.hello[i].state.store(static_cast<std::uint32_t>(rng()) % 7);
    ctl.hello[i].pid = static_cast<std::int32_t>(rng());
    ctl.hello[i].nonce = rng();
  }
  ctl.hello[0].state.store(shm::kHelloRequested);
  ctl.hello[0].pid = -1;
  ctl.hello[1].state.store(shm::kHelloRequested);
  ctl.hello[1].pid = 0x7ffffff0;
  att.ring_server();
  // A proper client still gets in, and is served.
  auto bystander = connect_bystander(server);
  check_bystander_is_served(server, bystander);
  server.ep().close(id);
}

BOOST_AUTO_TEST_SUITE_END()

// The "room again" hand-shakes of the shared-memory engine while the other side sleeps. A side
// that waits for room sets a flag the reader consumes when it reads; if one read frees too
// little and the waiter goes back to sleep without setting the flag again, later reads wake
// nobody and the waiter only notices at its next re-check slice (500 ms). Both directions.
#define BOOST_TEST_MODULE shm_wake
#include <atomic>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <random>
#include <thread>

#include "tests/support/chat_process.hpp"
#include "tests/support/frames.hpp"
#include "tests/support/main_fixture.hpp"
#include "tests/support/server_harness.hpp"
#include "tests/support/support.hpp"
#include "transport/cond/cond.hpp"
#include "transport/shm/engine.hpp"
#include "transport/shm/layout.hpp"

namespace bdata = boost::unit_test::data;
using namespace chat;
using namespace chat::transport;
using namespace chat::test;
using Kind = ServerEvent::Kind;

// Not in an anonymous namespace: data-driven test cases capture these in lambdas.
namespace shm_wake_support {

// Well under the 500 ms re-check slice a lost wake-up costs, well over a scheduling hiccup.
constexpr auto kPrompt = 250ms;

// A listening endpoint of `backend` with room for 4 clients, polled only when the test says.
struct Endpoint : ListeningEndpoint {
  explicit Endpoint(const Backend& b) : ListeningEndpoint(b, {.max_clients = 4, .log_as = {}}) {}

  // Connects a client (the handshake needs the server polling meanwhile); its id.
  std::pair<std::unique_ptr<ClientConnection>, ClientId> connect_and_accept() {
    ClientId id = 0;
    std::thread accept([&] {
      std::vector<ServerEvent> events;
      const auto end = Clock::now() + 10s;
      while (id == 0 && Clock::now() < end) {
        events.clear();
        ep().poll(events, deadline_after(20ms));
        for (const auto& e : events) {
          if (e.kind == Kind::kConnected) id = e.client;
        }
      }
    });
    std::unique_ptr<ClientConnection> c;
    try {
      c = connect();
    } catch (...) {
      accept.join();
      throw;
    }
    accept.join();
    BOOST_REQUIRE_MESSAGE(id != 0, "no kConnected");
    return {std::move(c), id};
  }
};

}  // namespace shm_wake_support

using shm_wake_support::Endpoint;
using shm_wake_support::kPrompt;

BOOST_AUTO_TEST_SUITE(shm_wake)

BOOST_DATA_TEST_CASE(writable_comes_promptly_after_small_reads, bdata::make(shm_backends()), name) {
  Endpoint server(*find_backend(name));
  auto [client, id] = server.connect_and_accept();
  const Frame small(100, std::byte{'x'});
  std::size_t queued = 0;
  while (server.ep().send(id, small) == SendResult::kSent) ++queued;
  BOOST_REQUIRE(queued > 1);
  // The server sleeps in poll() waiting for room; the client frees a little, then the rest.
  std::atomic<std::int64_t> writable_at{0};
  std::atomic<pid_t> poller_tid{0};
  std::thread poller([&] {
    poller_tid = ::gettid();
    std::vector<ServerEvent> events;
    const auto end = Clock::now() + 20s;
    while (writable_at.load() == 0 && Clock::now() < end) {
      events.clear();
      server.ep().poll(events, end);
      for (const auto& e : events) {
        if (e.kind == Kind::kWritable && e.client == id) {
          writable_at.store(Clock::now().time_since_epoch().count());
        }
      }
    }
  });
  Frame f;
  while (poller_tid.load() == 0) std::this_thread::yield();
  // The server sleeps in poll() waiting for room...
  BOOST_REQUIRE(wait_thread_sleeping(poller_tid.load(), 10000ms));
  BOOST_REQUIRE(client->receive(f, deadline_after(5s)) == ReceiveResult::kFrame);
  // ...looks and sleeps again (or has its kWritable already: one small frame fits now).
  const bool slept = wait_thread_sleeping(poller_tid.load(), 10000ms);
  BOOST_REQUIRE(slept || writable_at.load() != 0);
  const auto drained_from = Clock::now();
  for (std::size_t i = 1; i < queued; ++i) {
    BOOST_REQUIRE(client->receive(f, deadline_after(5s)) == ReceiveResult::kFrame);
  }
  poller.join();
  BOOST_REQUIRE_MESSAGE(writable_at.load() != 0, "no kWritable after the client drained it all");
  const auto late = Clock::time_point(Clock::duration(writable_at.load())) - drained_from;
  BOOST_TEST_MESSAGE(name << ": kWritable "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(late).count()
                          << " ms after the drain began");
  BOOST_TEST((late < kPrompt));
}

BOOST_DATA_TEST_CASE(client_send_resumes_promptly_after_small_reads, bdata::make(shm_backends()),
                     name) {
  Endpoint server(*find_backend(name));
  auto [client, id] = server.connect_and_accept();
  // Fill the up ring with 1-byte frames while the server does not read.
  const Frame tiny(1, std::byte{'t'});
  std::size_t queued = 0;
  while (client->send(tiny, Clock::now()) == SendResult::kSent) ++queued;
  BOOST_REQUIRE(queued > 0);
  // A big frame waits for room; the server frees it a little at a time (a bounded number of
  // frames per poll), each time too little for it until the last.
  std::atomic<bool> sent{false};
  std::atomic<pid_t> sender_tid{0};
  Clock::time_point sent_at{};
  std::thread sender([&] {
    sender_tid = ::gettid();
    const Frame big(4000, std::byte{'b'});
    sent = client->send(big, deadline_after(20s)) == SendResult::kSent;
    sent_at = Clock::now();
  });
  while (sender_tid.load() == 0) std::this_thread::yield();
  // The sender sleeps waiting for room (had it not, it would be gone: it returned kFull).
  BOOST_REQUIRE(wait_thread_sleeping(sender_tid.load(), 10000ms));
  const auto drain_from = Clock::now();
  std::vector<ServerEvent> events;
  std::size_t frames = 0;
  const auto end = Clock::now() + 5s;
  while (frames < queued + 1 && Clock::now() < end) {
    events.clear();
    server.ep().poll(events, deadline_after(100ms));
    for (const auto& e : events) {
      if (e.kind == Kind::kFrame && e.client == id) ++frames;
    }
  }
  sender.join();
  BOOST_REQUIRE(sent.load());
  BOOST_TEST(frames == queued + 1);
  const auto took = sent_at - drain_from;
  BOOST_TEST_MESSAGE(name << ": the big frame went "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                          << " ms after the server began to read");
  BOOST_TEST((took < kPrompt));
}

// A send that finds the down ring full raises the ring's "producer waiting" flag and asks for
// kWritable. A client that drains the moment it sees the flag rings the bell once; if the I/O
// thread looked before the send had asked for kWritable, nothing would wake it again and the
// event would wait for the 500 ms re-check. The hook makes that moment as long as it takes.
BOOST_DATA_TEST_CASE(writable_is_not_lost_to_a_drain_during_the_full_send,
                     bdata::make(shm_backends()), name) {
  // Polls that end only when woken (or by the engine's own re-check slice).
  ServerHarness server(*find_backend(name), {.max_clients = 4, .log_as = {}}, 5000ms);
  auto [client, id] = server.connect_and_wait();
  std::atomic<int> hooked{0};
  std::atomic<bool> settled{false};
  shm::set_full_hook_for_tests([&, c = client.get()] {
    if (hooked++ != 0) return;
    Frame f;
    while (c->receive(f, deadline_after(20ms)) == ReceiveResult::kFrame) {
    }
    // The I/O thread looks, and goes back to sleep.
    settled = wait_others_sleeping(10000ms);
  });
  const Frame small(100, std::byte{'x'});
  std::size_t queued = 0;
  while (server.ep().send(id, small) == SendResult::kSent) ++queued;
  const auto full_at = Clock::now();
  shm::set_full_hook_for_tests({});
  BOOST_REQUIRE(queued > 1);
  BOOST_REQUIRE(hooked.load() == 1);
  BOOST_REQUIRE_MESSAGE(settled.load(), "the I/O thread never went back to sleep");
  const auto w = server.take(Kind::kWritable, id, 2000ms);
  BOOST_REQUIRE_MESSAGE(w, "no kWritable after the client drained the ring");
  const auto late = Clock::now() - full_at;
  BOOST_TEST_MESSAGE(name << ": kWritable "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(late).count()
                          << " ms after the send returned kFull");
  BOOST_TEST((late < kPrompt));
  server.ep().close(id);
}

// A client scribbling on its own wake areas (clearing and setting `sleeping`, rewriting the
// sleeper's thread id, and for cond holding its wake-up lock) hurts only itself: the server's
// wake-ups of it stay bounded, its own sleep is on the server bell, and another client's round
// trips stay prompt. A client that keeps its wake-up lock held is dropped as malformed.
BOOST_DATA_TEST_CASE(a_client_scribbling_on_its_wake_areas_slows_nobody_else,
                     bdata::make(shm_backends()), name) {
  const Backend& backend = *find_backend(name);
  ServerHarness server(backend, {.max_clients = 4, .log_as = {}}, 5000ms);
  auto flavor = backend.shm_flavor(server.dir());
  ConnectOptions entry = server.connect_options();
  auto att = shm::Attachment::attach(entry, flavor);
  const auto hostile = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
  BOOST_REQUIRE(hostile);
  auto [client, id] = server.connect_and_wait();
  // Stopped and joined however the test ends.
  std::jthread scribbler([&](std::stop_token stop) {
    shm::ClientBlock& b = att.block();
    if (name == "cond") cond::cond_wake(b.rx_wake).mutex.lock(kNoDeadline);
    std::mt19937 rng(1);
    while (!stop.stop_requested()) {
      // It takes whatever the server sends, so the server keeps sending and waking it.
      b.down.head.store(b.down.tail.load());
      for (shm::WakeArea* a : {&b.rx_wake, &b.tx_wake}) {
        a->sleeping.store(rng() & 1);
        // Thread ids no process has (above any pid_max), none at all, and nonsense.
        const std::int32_t tids[] = {0, -1, 0x7fff0000 + static_cast<std::int32_t>(rng() & 0xffff)};
        a->sleeper_tid.store(tids[rng() % 3]);
      }
      std::this_thread::yield();  // two cores are shared with the server and the bystander
    }
  });
  auto slowest = Clock::duration::zero();
  const auto end = Clock::now() + 2s;
  int trips = 0;
  while (Clock::now() < end) {
    for (int i = 0; i < 8; ++i) server.ep().send(hostile->client, frame_of("wake up"));
    const auto start = Clock::now();
    BOOST_REQUIRE(server.round_trip(*client, id, "ping " + std::to_string(trips)));
    slowest = std::max(slowest, Clock::now() - start);
    ++trips;
  }
  BOOST_TEST_MESSAGE(name << ": " << trips << " round trips, slowest "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count()
                          << " ms");
  BOOST_TEST((slowest < kPrompt));
  if (name == "cond") {
    const auto gone = server.take(
        [&](const ServerEvent& e) {
          return e.kind == Kind::kDisconnected && e.client == hostile->client;
        },
        5000ms);
    BOOST_REQUIRE_MESSAGE(gone, "a client holding its wake-up lock was not dropped");
    BOOST_TEST((gone->gone == ServerEvent::Gone::kMalformed));
  }
  scribbler.request_stop();
  scribbler.join();
  server.ep().close(hostile->client);
  server.ep().close(id);
}

BOOST_AUTO_TEST_SUITE_END()

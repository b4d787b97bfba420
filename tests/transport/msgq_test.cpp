// Pitfalls of the `msgq` backend: a full 16 KiB client queue, garbage and forged sender ids in
// the shared server queue, queues removed from under their users, a killed server's queues
// (and only those) reclaimed, key collisions, and a server that must sleep while idle.
#define BOOST_TEST_MODULE msgq_transport
#include "transport/msgq/msgq.hpp"

#include <signal.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "common/instance.hpp"
#include "tests/support/chat_process.hpp"
#include "tests/support/frames.hpp"
#include "tests/support/main_fixture.hpp"
#include "tests/support/server_harness.hpp"
#include "tests/support/support.hpp"
#include "transport/factory.hpp"
#include "transport/msgq/sysv_queue.hpp"
#include "transport/msgq/wire.hpp"

namespace bdata = boost::unit_test::data;
namespace fs = std::filesystem;
namespace wire = chat::transport::msgq::wire;
using namespace chat;
using namespace chat::transport;
using namespace chat::test;
namespace mq = chat::transport::msgq;
using chat::transport::msgq::OwnedQueue;
using chat::transport::msgq::stat_queue;
using Kind = ServerEvent::Kind;

namespace {

const Backend& msgq_backend() {
  return *find_backend("msgq");
}

bool queue_exists(int id) {
  msqid_ds ds{};
  return stat_queue(id, ds);
}

std::uint64_t random_u64() {
  std::uint64_t v = 0;
  while (v == 0) BOOST_REQUIRE(::getrandom(&v, sizeof v, 0) == sizeof v);
  return v;
}

// Puts a message into a queue as any process of ours could.
void put(int queue, long mtype, const void* bytes, std::size_t size) {
  std::vector<std::byte> b(sizeof mtype + size);  // up to msgmax, more than any valid message
  std::memcpy(b.data(), &mtype, sizeof mtype);
  if (size > 0) std::memcpy(b.data() + sizeof mtype, bytes, size);
  BOOST_REQUIRE_MESSAGE(::msgsnd(queue, b.data(), size, IPC_NOWAIT) == 0, std::strerror(errno));
}

// The queue ids a server recorded in its runtime dir.
std::vector<int> recorded_queues(const fs::path& dir) {
  std::ifstream in(dir / "msgq.queues");
  std::vector<int> ids;
  int id;
  long long key, ctime;
  while (in >> id >> key >> ctime) ids.push_back(id);
  return ids;
}

// The msgq server of these tests; what it warns about shows in the test log. Each poll() of
// its loop waits up to 1 s when idle: an_idle_server_sleeps counts on that.
struct MsgqServer : ServerHarness {
  explicit MsgqServer(std::size_t max_clients = 16)
      : ServerHarness(msgq_backend(), {max_clients, "msgq_test"}, 1s) {}
  int server_queue() { return ep().objects().at("queue").get<int>(); }
};

// A client speaking the wire protocol by hand, to break its rules after a proper handshake.
struct RawClient {
  int server_queue;
  int queue = -1;
  std::uint64_t nonce = random_u64();
  wire::WelcomeMsg welcome;

  explicit RawClient(MsgqServer& server) : server_queue(server.server_queue()) {
    wire::HelloMsg h;
    h.pid = ::getpid();
    h.nonce = nonce;
    put(server_queue, wire::kHello, &h, sizeof h);
    const auto until = std::chrono::steady_clock::now() + 5s;
    while ((queue = ::msgget(wire::client_key(nonce), 0)) < 0 &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(1ms);
    }
    BOOST_REQUIRE(queue >= 0);
    wire::Buffer b;
    while (::msgrcv(queue, &b, sizeof b.text, wire::kWelcome, IPC_NOWAIT) < 0 &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(1ms);
    }
    std::memcpy(&welcome, b.text, sizeof welcome);
    BOOST_REQUIRE(welcome.nonce == nonce);
    up(wire::UpKind::kReady, {});
  }

  void up(wire::UpKind kind, const std::vector<std::byte>& payload) const {
    std::vector<std::byte> m(sizeof(wire::UpHeader));
    const wire::UpHeader h{welcome.client, welcome.token, kind, 0};
    std::memcpy(m.data(), &h, sizeof h);
    m.insert(m.end(), payload.begin(), payload.end());
    put(server_queue, wire::kUp, m.data(), m.size());
  }
};

// Something any process of ours can put into the server queue, given the id of a connected
// client to pretend to be.
struct Garbage {
  std::string name;
  std::function<std::pair<long, std::vector<std::byte>>(ClientId victim)> make;
};

std::ostream& operator<<(std::ostream& os, const Garbage& g) {
  return os << g.name;
}

template <typename T>
std::vector<std::byte> bytes_of(const T& v, std::size_t extra = 0,
                                std::byte fill = std::byte{'x'}) {
  std::vector<std::byte> b(sizeof v + extra, fill);
  std::memcpy(b.data(), &v, sizeof v);
  return b;
}

std::vector<Garbage> server_queue_garbage() {
  using Bytes = std::vector<std::byte>;
  return {
      {"unknown mtype",
       [](ClientId) {
         return std::pair{77L, Bytes(10, std::byte{1})};
       }},
      {"empty message",
       [](ClientId) {
         return std::pair{wire::kUp, Bytes{}};
       }},
      {"short hello",
       [](ClientId) {
         return std::pair{wire::kHello, Bytes(3, std::byte{1})};
       }},
      {"hello with a wrong magic number",
       [](ClientId) {
         wire::HelloMsg h;
         h.magic = 0;
         h.pid = ::getpid();
         return std::pair{wire::kHello, bytes_of(h)};
       }},
      {"hello from a pid that does not exist",
       [](ClientId) {
         wire::HelloMsg h;
         h.pid = dead_pid();
         h.nonce = random_u64();
         return std::pair{wire::kHello, bytes_of(h)};
       }},
      {"message too short for its header",
       [](ClientId) {
         return std::pair{wire::kUp, Bytes(5, std::byte{1})};
       }},
      {"message for a client that never existed",
       [](ClientId) {
         return std::pair{wire::kUp,
                          bytes_of(wire::UpHeader{999999, 1, wire::UpKind::kData, 0}, 4)};
       }},
      {"forged sender id with data",
       [](ClientId victim) {
         return std::pair{wire::kUp,
                          bytes_of(wire::UpHeader{victim, 12345, wire::UpKind::kData, 0}, 4)};
       }},
      {"forged sender id with a goodbye",
       [](ClientId victim) {
         return std::pair{wire::kUp,
                          bytes_of(wire::UpHeader{victim, 12345, wire::UpKind::kBye, 0})};
       }},
      {"forged sender id, oversize",
       [](ClientId victim) {
         return std::pair{wire::kUp,
                          bytes_of(wire::UpHeader{victim, 12345, wire::UpKind::kData, 0}, 8000)};
       }},
      {"forged death marker",
       [](ClientId victim) {
         return std::pair{wire::kMark, bytes_of(wire::MarkMsg{777, victim})};
       }},
      {"forged wake-up",
       [](ClientId) {
         return std::pair{wire::kWake, bytes_of(wire::WakeMsg{777})};
       }},
      {"wake-up of the wrong size",
       [](ClientId) {
         return std::pair{wire::kWake, Bytes(3, std::byte{1})};
       }},
  };
}

// Breaking the rules with a valid token: the offender is known, and disconnected.
struct Offence {
  std::string name;
  wire::UpKind kind;
  std::size_t payload;
  std::string detail;  // part of ServerEvent::detail
};

std::ostream& operator<<(std::ostream& os, const Offence& o) {
  return os << o.name;
}

std::vector<Offence> offences() {
  return {
      {"unknown kind", static_cast<wire::UpKind>(9), 0, "unknown kind 9"},
      {"empty data message", wire::UpKind::kData, 0, "data message of 0 bytes"},
      {"oversize data message", wire::UpKind::kData, kMaxFrameBytes + 1, "longer than"},
      {"second ready", wire::UpKind::kReady, 0, "second kReady"},
  };
}

// CPU time this process has used, all threads.
std::chrono::microseconds cpu_time() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return std::chrono::seconds(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         std::chrono::microseconds(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(msgq)

BOOST_AUTO_TEST_CASE(a_full_client_queue_is_full_for_that_client_only) {
  MsgqServer server;
  auto [a, a_id] = server.connect_and_wait();
  auto [b, b_id] = server.connect_and_wait();
  // A does not read: its queue (16 KiB) fills up. A first kFull may not last (it did when a
  // receiving thread of A's emptied the queue into a buffer of its own).
  std::vector<Frame> sent;
  std::size_t bytes = 0;
  for (std::uint32_t n = 0;; ++n) {
    const Frame f = patterned(n, 4000);
    SendResult r = server.ep().send(a_id, f);
    if (r == SendResult::kFull) {
      std::this_thread::sleep_for(50ms);
      r = server.ep().send(a_id, f);
      if (r == SendResult::kFull) break;
    }
    BOOST_REQUIRE(r == SendResult::kSent);
    sent.push_back(f);
    bytes += f.size();
    BOOST_REQUIRE_MESSAGE(bytes <= kMaxTransportBufferBytes, "buffers hold more than 256 KiB");
  }
  BOOST_TEST(sent.size() >= 4u);  // at least the queue's 16 KiB
  BOOST_TEST_MESSAGE(sent.size() << " frames of 4000 bytes queued for A");
  while (server.take(Kind::kWritable, a_id, 100ms)) {
  }
  // B is not held up by A.
  for (int i = 0; i < 50; ++i) {
    BOOST_REQUIRE(
        (server.ep().send(b_id, frame_of("to b " + std::to_string(i))) == SendResult::kSent));
    Frame f;
    BOOST_REQUIRE((b->receive(f, deadline_after(5s)) == ReceiveResult::kFrame));
    BOOST_REQUIRE(text_of(f) == "to b " + std::to_string(i));
  }
  BOOST_TEST(server.round_trip(*b, b_id, "b talks too"));
  BOOST_TEST((server.ep().send(a_id, patterned(0, 4000)) == SendResult::kFull));
  BOOST_TEST(!server.take(Kind::kWritable, a_id, 50ms), "kWritable while nothing was read");
  // A reads: kWritable comes, and nothing was lost or reordered.
  for (std::size_t i = 0; i < sent.size(); ++i) {
    Frame f;
    BOOST_REQUIRE((a->receive(f, deadline_after(5s)) == ReceiveResult::kFrame));
    BOOST_REQUIRE_MESSAGE(f == sent[i], "frame " << i << " wrong");
  }
  BOOST_REQUIRE(server.take(Kind::kWritable, a_id));
  std::jthread reader([&, &a = a] {
    for (std::uint32_t n = 0; n < 300; ++n) {
      Frame f;
      if (a->receive(f, deadline_after(10s)) != ReceiveResult::kFrame || f != patterned(n, 3000)) {
        BOOST_ERROR("frame " << n << " after the jam lost or wrong");
        return;
      }
    }
  });
  for (std::uint32_t n = 0; n < 300; ++n) server.send_all(a_id, patterned(n, 3000));
  reader.join();
  server.ep().close(a_id);
  server.ep().close(b_id);
}

BOOST_DATA_TEST_CASE(garbage_in_the_server_queue_hurts_nobody, bdata::make(server_queue_garbage()),
                     g) {
  MsgqServer server;
  auto [a, a_id] = server.connect_and_wait();
  auto [b, b_id] = server.connect_and_wait();
  const auto [mtype, bytes] = g.make(a_id);
  put(server.server_queue(), mtype, bytes.data(), bytes.size());
  BOOST_TEST(server.round_trip(*a, a_id, "a after " + g.name));
  BOOST_TEST(server.round_trip(*b, b_id, "b after " + g.name));
  // Nobody was disconnected, and nothing forged reached anybody.
  BOOST_TEST(!server.take([](const ServerEvent& e) { return e.kind != Kind::kWritable; }, 100ms));
  BOOST_TEST(server.poll_error().empty());
  server.ep().close(a_id);
  server.ep().close(b_id);
}

BOOST_DATA_TEST_CASE(a_known_client_breaking_the_rules_is_disconnected_alone,
                     bdata::make(offences()), o) {
  MsgqServer server;
  auto [good, good_id] = server.connect_and_wait();
  RawClient bad(server);
  const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
  BOOST_REQUIRE(c);
  BOOST_TEST(c->pid == ::getpid());
  bad.up(o.kind, std::vector<std::byte>(o.payload, std::byte{'z'}));
  const auto d = server.take(Kind::kDisconnected, c->client);
  BOOST_REQUIRE_MESSAGE(d, "the offender was not disconnected");
  BOOST_TEST((d->gone == ServerEvent::Gone::kMalformed));
  BOOST_TEST(d->detail.find(o.detail) != std::string::npos, d->detail);
  server.ep().close(c->client);
  BOOST_TEST(!queue_exists(bad.queue));  // its queue goes with it
  BOOST_TEST(server.round_trip(*good, good_id, "unaffected"));
  server.ep().close(good_id);
}

BOOST_AUTO_TEST_CASE(queues_removed_from_under_their_users_end_cleanly) {
  MsgqServer server;
  auto [a, a_id] = server.connect_and_wait();
  // The server closes A with frames still queued: A reads them, then sees the end (EIDRM).
  for (int i = 0; i < 3; ++i) server.ep().send(a_id, frame_of("last " + std::to_string(i)));
  server.ep().close(a_id);
  for (int i = 0; i < 3; ++i) {
    Frame f;
    BOOST_REQUIRE((a->receive(f, deadline_after(5s)) == ReceiveResult::kFrame));
    BOOST_TEST(text_of(f) == "last " + std::to_string(i));
  }
  Frame f;
  BOOST_TEST((a->receive(f, deadline_after(5s)) == ReceiveResult::kClosed));
  BOOST_TEST((a->send(frame_of("x"), deadline_after(1s)) == SendResult::kGone));
  // Someone removes the server queue: clients get kGone, the server reports it from poll()
  // rather than crashing or spinning.
  auto [b, b_id] = server.connect_and_wait();
  BOOST_REQUIRE(::msgctl(server.server_queue(), IPC_RMID, nullptr) == 0);
  BOOST_TEST((b->send(frame_of("x"), deadline_after(1s)) == SendResult::kGone));
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (server.poll_error().empty() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  BOOST_TEST(server.poll_error().find("msgrcv") != std::string::npos, server.poll_error());
  server.ep().close(b_id);
}

BOOST_AUTO_TEST_CASE(a_killed_servers_queues_and_only_those_are_reclaimed) {
  TempRuntime rt;
  std::vector<pid_t> pids{::getpid()};
  // Ours, but not the server's: cleanup must leave it alone, even when the record names its id.
  OwnedQueue decoy = OwnedQueue::create(IPC_PRIVATE, "decoy");
  std::vector<int> recorded;
  {
    Process server(
        {binary("transport_peer").string(), "server", "msgq", rt.base().string(), rt.instance()});
    pids.push_back(server.pid());
    BOOST_REQUIRE_MESSAGE(server.wait_out_contains("ready", 5s), server.err());
    const auto info = find_live_instance(rt.base(), rt.instance());
    BOOST_REQUIRE(info);
    auto client = msgq_backend().connect(
        named_options(rt.dir(), rt.instance(), info->pid, info->objects, deadline_after(5s)));
    BOOST_TEST((client->send(frame_of("ping"), deadline_after(5s)) == SendResult::kSent));
    Frame f;
    BOOST_REQUIRE((client->receive(f, deadline_after(5s)) == ReceiveResult::kFrame));
    recorded = recorded_queues(rt.dir());
    BOOST_TEST(recorded.size() == 2u);  // the server queue and the client's
    server.kill(SIGKILL);
    server.wait(5s);
    BOOST_TEST((client->receive(f, deadline_after(3s)) == ReceiveResult::kClosed));
    BOOST_TEST(!client->server_alive());
  }
  for (int id : recorded) BOOST_TEST(queue_exists(id), "queue " << id << " vanished by itself");
  {
    // A forged line naming the decoy, with the wrong creation time.
    std::ofstream out(rt.dir() / "msgq.queues", std::ios::app);
    out << decoy.id() << " 0 " << decoy.ctime() - 1 << "\n";
  }
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const auto stale = dir.stale_info();
  BOOST_REQUIRE(stale);
  const auto removed = msgq_backend().cleanup({dir.path(), stale->pid, stale->objects});
  BOOST_TEST(removed.size() == 2u);
  for (const auto& line : removed) BOOST_TEST_MESSAGE("removed: " << line);
  for (int id : recorded) BOOST_TEST(!queue_exists(id));
  BOOST_TEST(queue_exists(decoy.id()));
  BOOST_TEST(msgq_backend().cleanup({dir.path(), stale->pid, stale->objects}).empty());
  dir.remove();
  check_no_leftovers(rt, pids);
}

BOOST_AUTO_TEST_CASE(chatd_restarted_after_sigkill_reclaims_the_queues) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, "msgq");
  std::vector<pid_t> pids{::getpid(), chatd->pid()};
  auto alice = start_chat(rt, "alice");
  pids.push_back(alice->pid());
  const auto old_queues = recorded_queues(rt.dir());
  BOOST_TEST(old_queues.size() == 2u);
  chatd->kill(SIGKILL);
  chatd->wait(5s);
  const auto code = alice->wait(3s);  // a dead server: exit 5 within 1 s
  BOOST_TEST((code && *code == 5), alice->err());
  for (int id : old_queues) BOOST_TEST(queue_exists(id));
  auto again = start_chatd(rt, "msgq");
  pids.push_back(again->pid());
  // start_chatd() may return on the dead chatd's instance.json, once the new one holds the lock
  // but before it has cleaned up and published its own.
  const auto until = std::chrono::steady_clock::now() + 5s;
  for (;;) {
    const auto info = find_live_instance(rt.base(), rt.instance());
    if ((info && info->pid == again->pid()) || std::chrono::steady_clock::now() >= until) break;
    std::this_thread::sleep_for(5ms);
  }
  for (int id : old_queues) BOOST_TEST(!queue_exists(id), "queue " << id << " not reclaimed");
  BOOST_TEST(again->wait_err_contains("removed leftover", 5s), again->err());
  stop_and_check_clean(*again, rt, pids, 5s);
}

BOOST_AUTO_TEST_CASE(a_key_collision_is_an_error_never_a_shared_queue) {
  const key_t key = wire::client_key(random_u64());
  OwnedQueue first = OwnedQueue::create(key, "first");
  put(first.id(), 1, "x", 1);
  BOOST_CHECK_EXCEPTION(OwnedQueue::create(key, "second"), std::system_error,
                        [](const std::system_error& e) { return e.code().value() == EEXIST; });
  msqid_ds ds{};
  BOOST_REQUIRE(stat_queue(first.id(), ds));
  BOOST_TEST(ds.msg_qnum == 1u);  // untouched

  // A file planted where the server creates its key file: listen() refuses; no queue made.
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  { std::ofstream(dir.path() / "msgq.key") << "planted"; }
  ListenOptions lo;
  lo.dir = dir.path();
  lo.instance = rt.instance();
  lo.max_clients = 4;
  BOOST_CHECK_THROW(msgq_backend().listen(lo), std::system_error);
  for (int project : {'m', 'q', 'M', 'Q'}) {
    BOOST_TEST(::msgget(::ftok((dir.path() / "msgq.key").c_str(), project), 0) == -1);
  }
  dir.remove();
}

BOOST_AUTO_TEST_CASE(the_record_names_exactly_the_live_queues) {
  TempRuntime rt;
  fs::create_directories(rt.dir());
  const fs::path path = rt.dir() / "msgq.queues";
  {
    auto record = mq::QueueRecord::create(path);
    OwnedQueue a = OwnedQueue::create(IPC_PRIVATE, "a");
    OwnedQueue b = OwnedQueue::create(IPC_PRIVATE, "b");
    OwnedQueue c = OwnedQueue::create(IPC_PRIVATE, "c");
    for (const OwnedQueue* q : {&a, &b, &c}) record.add(*q);
    BOOST_TEST(record.lines() == 3u);
    record.rewrite({&a, &c});  // b is no longer the server's to remove
    BOOST_TEST(record.lines() == 2u);
    BOOST_TEST((recorded_queues(rt.dir()) == std::vector<int>{a.id(), c.id()}));
    const auto removed = mq::remove_recorded_queues(path);
    BOOST_TEST(removed.size() == 2u);
    BOOST_TEST(!queue_exists(a.id()));
    BOOST_TEST(queue_exists(b.id()));
    BOOST_TEST(!queue_exists(c.id()));
  }
  BOOST_TEST(!fs::exists(path));  // the record goes with its owner
  BOOST_TEST(mq::remove_recorded_queues(path).empty());
  fs::remove_all(rt.base());
}

BOOST_AUTO_TEST_CASE(an_idle_server_sleeps) {
  MsgqServer server;
  std::vector<std::pair<std::unique_ptr<ClientConnection>, ClientId>> clients;
  for (int i = 0; i < 20; ++i) clients.push_back(server.connect_and_wait());
  const auto idle = [&](const char* when) {
    std::this_thread::sleep_for(100ms);
    const auto polls = server.polls();
    const auto cpu = cpu_time();
    std::this_thread::sleep_for(1500ms);
    const auto used = cpu_time() - cpu;
    BOOST_TEST_MESSAGE(when << ": " << server.polls() - polls << " polls, " << used.count()
                            << " us CPU in 1.5 s");
    BOOST_TEST(server.polls() - polls <= 3u, when);  // only the 1-s deadlines of the loop
    BOOST_TEST(used < std::chrono::milliseconds(50), when);
  };
  idle("20 idle clients");
  // A client queue runs full, then drains: the server re-checks only meanwhile.
  auto& [a, a_id] = clients.front();
  std::size_t sent = 0;
  while (server.ep().send(a_id, patterned(static_cast<std::uint32_t>(sent), 4000)) ==
         SendResult::kSent) {
    ++sent;
  }
  for (std::size_t i = 0; i < sent; ++i) {
    Frame f;
    BOOST_REQUIRE((a->receive(f, deadline_after(5s)) == ReceiveResult::kFrame));
  }
  BOOST_REQUIRE(server.take(Kind::kWritable, a_id));
  idle("after a full queue drained");
  for (auto& [c, id] : clients) server.ep().close(id);
}

// The reader blocks in msgrcv itself; wake(), deadlines and the other side's death reach it
// through wake-ups in its own queue, which never pile up and cannot be forged to any effect.
BOOST_AUTO_TEST_CASE(a_reader_blocked_in_msgrcv_wakes_for_what_it_should_only) {
  MsgqServer server;
  auto [c, id] = server.connect_and_wait();
  const auto took = [](auto&& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    return std::chrono::steady_clock::now() - start;
  };
  Frame f;
  // The deadline: not before, not much after.
  auto t = took([&, &c = c] {
    BOOST_TEST((c->receive(f, deadline_after(100ms)) == ReceiveResult::kTimeout));
  });
  BOOST_TEST((t >= 100ms && t < 1s));
  // wake() while blocked without a deadline, and wake() before receive().
  {
    std::jthread waker([&, &c = c] {
      std::this_thread::sleep_for(50ms);
      c->wake();
    });
    t = took([&, &c = c] { BOOST_TEST((c->receive(f, kNoDeadline) == ReceiveResult::kTimeout)); });
    BOOST_TEST((t >= 50ms && t < 1s));
  }
  // Many wake()s leave one wake-up in each queue at most: frames still fit.
  for (int i = 0; i < 10000; ++i) {
    c->wake();
    server.ep().wake();
  }
  msqid_ds ds{};
  BOOST_REQUIRE(stat_queue(server.server_queue(), ds));
  BOOST_TEST(ds.msg_qnum <= 1u);
  BOOST_TEST((server.ep().send(id, frame_of("after the wake-ups")) == SendResult::kSent));
  BOOST_TEST((c->receive(f, deadline_after(5s)) == ReceiveResult::kTimeout));  // woken before
  BOOST_REQUIRE((c->receive(f, deadline_after(5s)) == ReceiveResult::kFrame));
  BOOST_TEST(text_of(f) == "after the wake-ups");
  // A forged wake-up in the client's queue does not end its wait early.
  std::vector<int> queues = recorded_queues(server.dir());
  std::erase(queues, server.server_queue());
  BOOST_REQUIRE(queues.size() == 1u);
  const wire::WakeMsg forged{777};
  put(queues.front(), wire::kWake, &forged, sizeof forged);
  t = took([&, &c = c] {
    BOOST_TEST((c->receive(f, deadline_after(200ms)) == ReceiveResult::kTimeout));
  });
  BOOST_TEST((t >= 200ms && t < 1s));
  // The server's own deadline ends its poll() when nothing happens: about one per second.
  const auto polls = server.polls();
  std::this_thread::sleep_for(2500ms);
  BOOST_TEST(server.polls() - polls >= 1u);
  BOOST_TEST(server.polls() - polls <= 4u);
  BOOST_TEST(server.round_trip(*c, id, "still fine"));
  server.ep().close(id);
}

BOOST_AUTO_TEST_CASE(a_stolen_wake_up_does_not_put_the_server_to_sleep_for_good) {
  // Another process of our uid takes the server's wake-up messages out of its queue. Once one
  // is stolen, the server must still wake for its deadlines: it sends another after a second.
  MsgqServer server;
  const int queue = server.server_queue();
  std::atomic<bool> stop{false}, done{false};
  std::atomic<int> stolen{0};
  std::thread thief([&] {
    struct {
      long mtype;
      std::byte text[64];
    } m{};
    while (!stop.load()) {
      if (::msgrcv(queue, &m, sizeof m.text, wire::kWake, MSG_NOERROR) >= 0) ++stolen;
    }
    done = true;
  });
  std::this_thread::sleep_for(3s);  // the thief gets its first wake-up here
  const auto polls = server.polls();
  std::this_thread::sleep_for(4s);
  const auto later = server.polls();
  stop = true;
  // The thief is blocked in msgrcv: wake-ups of our own end it (the server may take some).
  const wire::WakeMsg bogus{1};
  while (!done.load()) {
    put(queue, wire::kWake, &bogus, sizeof bogus);
    std::this_thread::sleep_for(20ms);
  }
  thief.join();
  BOOST_TEST(stolen.load() > 0);
  BOOST_TEST(later - polls >= 1u);  // frozen for good before the fix
}

BOOST_AUTO_TEST_SUITE_END()

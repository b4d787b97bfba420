// Pitfalls of the `msgq` backend: a full 16 KiB down queue, garbage and removed queues from a
// hostile client (who may hurt only itself), a flooded bell, queues that must belong to their
// client alone, a killed server's queues (and only those) reclaimed, nothing left after a clean
// shutdown, and a server that must sleep while idle.
#define BOOST_TEST_MODULE msgq_transport
#include "transport/msgq/msgq.hpp"

#include <signal.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cstdio>
#include <cstring>
#include <ctime>
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
#include "transport/bell.hpp"
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

// Puts a message into a queue as any process of its account could.
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
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    int id;
    if (fields >> id) ids.push_back(id);
  }
  return ids;
}

// The ids `ipcs -q` lists.
std::vector<int> ipcs_queue_ids() {
  std::vector<int> ids;
  FILE* p = ::popen("ipcs -q 2>/dev/null", "r");
  BOOST_REQUIRE(p != nullptr);
  char line[512];
  while (std::fgets(line, sizeof line, p) != nullptr) {
    unsigned long key;
    int id;
    if (std::sscanf(line, "%lx %d", &key, &id) == 2) ids.push_back(id);
  }
  ::pclose(p);
  return ids;
}

bool listed_by_ipcs(int id) {
  const auto ids = ipcs_queue_ids();
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// The msgq server of these tests; what it warns about shows in the test log. Each poll() of
// its loop waits up to 1 s when idle: an_idle_server_sleeps counts on that.
struct MsgqServer : ServerHarness {
  explicit MsgqServer(std::size_t max_clients = 16)
      : ServerHarness(msgq_backend(), {max_clients, "msgq_test"}, 1s) {}
};

// A client that went through the door like any other, and then uses its channel by hand, to
// break the rules: it holds its up and down queue ids and its bell.
struct RawClient {
  door::Pass pass;
  int up = -1;
  int down = -1;
  std::optional<ClientBell> bell;

  explicit RawClient(MsgqServer& server)
      : pass(transport::arrive(server.dir(), server.rt().instance(), deadline_after(5s)).pass) {
    BOOST_REQUIRE(pass.transport == "msgq");
    up = pass.channel.at("up").get<int>();
    down = pass.channel.at("down").get<int>();
    BOOST_REQUIRE(pass.fds.size() == wire::kGrantFds);
    bell.emplace(std::move(pass.fds[wire::kFdBellPage]), std::move(pass.fds[wire::kFdBellEvent]));
  }

  void send(long mtype, const std::vector<std::byte>& bytes) {
    put(up, mtype, bytes.data(), bytes.size());
    bell->ring_always();
  }
};

// What a client can put into its own up queue against the rules.
struct Garbage {
  std::string name;
  long mtype;
  std::size_t bytes;
  std::string detail;  // part of ServerEvent::detail
};

std::ostream& operator<<(std::ostream& os, const Garbage& g) {
  return os << g.name;
}

std::vector<Garbage> up_queue_garbage() {
  return {
      {"unknown mtype", 77, 10, "unknown type 77"},
      {"a wake-up, which only goes down", wire::kWake, 8, "unknown type"},
      {"empty data message", wire::kData, 0, "data message of 0 bytes"},
      {"oversize data message", wire::kData, kMaxFrameBytes + 1, "longer than"},
      {"oversize up to msgmax", wire::kData, 8192, "longer than"},
      {"goodbye with bytes", wire::kBye, 3, "goodbye of 3 bytes"},
  };
}

// CPU time this process has used, all threads.
std::chrono::microseconds cpu_time() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return std::chrono::seconds(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         std::chrono::microseconds(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

// Runs `f` in a child process with the ids of `uid`; true if it returned true there.
bool as_account(uid_t uid, const std::function<bool()>& f) {
  const pid_t child = ::fork();
  if (child == 0) {
    if (::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) ::_exit(2);
    ::_exit(f() ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

constexpr uid_t kNobody = 65534;

std::vector<std::byte> bytes_of_text(const std::string& text) {
  const Frame f = frame_of(text);
  return {f.begin(), f.end()};
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
      // Once every thread (A's included) has done what it could, a kFull is for good.
      BOOST_REQUIRE(wait_others_sleeping(10000ms));
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

BOOST_AUTO_TEST_CASE(a_clients_queues_are_its_own_and_private) {
  MsgqServer server;
  RawClient raw(server);
  const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
  BOOST_REQUIRE(c);
  BOOST_TEST(c->pid == ::getpid());
  BOOST_TEST(c->uid == ::geteuid());
  BOOST_TEST(raw.up != raw.down);
  for (const int id : {raw.up, raw.down}) {
    msqid_ds ds{};
    BOOST_REQUIRE(stat_queue(id, ds));
    BOOST_TEST(ds.msg_perm.__key == IPC_PRIVATE);  // nobody finds it by name
    BOOST_TEST(ds.msg_perm.uid == ::geteuid());
    BOOST_TEST(ds.msg_perm.cuid == raw.pass.server_uid);
    BOOST_TEST((ds.msg_perm.mode & 0777) == 0600u);
  }
  // Another account can neither write nor read them (only root can be another account here).
  if (::geteuid() == 0) {
    const int up = raw.up, down = raw.down;
    BOOST_TEST(as_account(kNobody, [&] {
      long m[2] = {wire::kData, 0};
      return ::msgsnd(up, m, 1, IPC_NOWAIT) != 0 && errno == EACCES &&
             ::msgrcv(down, m, sizeof m[1], 0, IPC_NOWAIT) != 0 && errno == EACCES;
    }));
  }
  server.ep().close(c->client);
}

BOOST_AUTO_TEST_CASE(a_queue_handed_to_another_account_stays_the_creators_to_use_and_remove) {
  if (::geteuid() != 0) return;  // needs two accounts
  // What the server relies on, as an unprivileged creator: after IPC_SET to the client's uid
  // it can still send, receive, look and remove -- also after a crash, from cleanup().
  TempRuntime rt;
  fs::create_directories(rt.dir());
  BOOST_REQUIRE(::chown(rt.base().c_str(), kNobody, kNobody) == 0);
  BOOST_REQUIRE(::chown(rt.dir().c_str(), kNobody, kNobody) == 0);
  const fs::path path = rt.dir() / "msgq.queues";
  BOOST_TEST(as_account(kNobody, [&] {
    try {
      auto record = mq::QueueRecord::create(path);
      OwnedQueue q = OwnedQueue::create_for(kNobody - 1, "handed");
      record.add(q);
      msqid_ds ds{};
      long m[2] = {wire::kData, 7};
      if (!stat_queue(q.id(), ds) || ds.msg_perm.uid != kNobody - 1 ||
          ::msgsnd(q.id(), m, sizeof m[1], IPC_NOWAIT) != 0 ||
          ::msgrcv(q.id(), m, sizeof m[1], 0, IPC_NOWAIT) != sizeof m[1]) {
        return false;
      }
      const int id = q.id();
      const auto removed = mq::remove_recorded_queues(path);
      return removed.size() == 1 && !queue_exists(id);
    } catch (const std::exception&) {
      return false;
    }
  }));
}

BOOST_DATA_TEST_CASE(garbage_in_a_clients_queue_disconnects_it_alone,
                     bdata::make(up_queue_garbage()), g) {
  MsgqServer server;
  auto [good, good_id] = server.connect_and_wait();
  RawClient bad(server);
  const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
  BOOST_REQUIRE(c);
  // A proper frame first: delivered.
  bad.send(wire::kData, bytes_of_text("hello"));
  const auto f = server.take(Kind::kFrame, c->client);
  BOOST_REQUIRE(f);
  BOOST_TEST(text_of(f->frame) == "hello");
  bad.send(g.mtype, std::vector<std::byte>(g.bytes, std::byte{'z'}));
  const auto d = server.take(Kind::kDisconnected, c->client);
  BOOST_REQUIRE_MESSAGE(d, "the offender was not disconnected");
  BOOST_TEST((d->gone == ServerEvent::Gone::kMalformed));
  BOOST_TEST(d->detail.find(g.detail) != std::string::npos, d->detail);
  BOOST_TEST(server.round_trip(*good, good_id, "unaffected"));
  server.ep().close(c->client);
  BOOST_TEST(!queue_exists(bad.up));  // its queues go with it
  BOOST_TEST(!queue_exists(bad.down));
  BOOST_TEST(server.round_trip(*good, good_id, "still unaffected"));
  BOOST_TEST(server.poll_error().empty());
  server.ep().close(good_id);
}

BOOST_AUTO_TEST_CASE(a_client_removing_or_shrinking_its_queues_hurts_only_itself) {
  MsgqServer server;
  auto [good, good_id] = server.connect_and_wait();
  // Removes its up queue: seen at the next look, disconnected as malformed.
  {
    RawClient bad(server);
    const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
    BOOST_REQUIRE(c);
    BOOST_REQUIRE(::msgctl(bad.up, IPC_RMID, nullptr) == 0);
    bad.bell->ring_always();
    const auto d = server.take(Kind::kDisconnected, c->client);
    BOOST_REQUIRE(d);
    BOOST_TEST((d->gone == ServerEvent::Gone::kMalformed));
    BOOST_TEST(d->detail.find("up queue") != std::string::npos, d->detail);
    server.ep().close(c->client);
    BOOST_TEST(!queue_exists(bad.down));
  }
  BOOST_TEST(server.round_trip(*good, good_id, "after an up queue removed"));
  // Removes its down queue: the server's next send says kGone, and reports it.
  {
    RawClient bad(server);
    const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
    BOOST_REQUIRE(c);
    BOOST_REQUIRE(::msgctl(bad.down, IPC_RMID, nullptr) == 0);
    BOOST_TEST((server.ep().send(c->client, frame_of("x")) == SendResult::kGone));
    BOOST_TEST(server.ep().buffered(c->client) == 0u);
    const auto d = server.take(Kind::kDisconnected, c->client);
    BOOST_REQUIRE(d);
    BOOST_TEST(d->detail.find("down queue") != std::string::npos, d->detail);
    server.ep().close(c->client);
  }
  BOOST_TEST(server.round_trip(*good, good_id, "after a down queue removed"));
  // Lowers msg_qbytes of its down queue: full sooner, nobody else notices.
  {
    RawClient bad(server);
    const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
    BOOST_REQUIRE(c);
    msqid_ds ds{};
    BOOST_REQUIRE(stat_queue(bad.down, ds));
    ds.msg_qbytes = 100;
    BOOST_REQUIRE(::msgctl(bad.down, IPC_SET, &ds) == 0);
    BOOST_TEST((server.ep().send(c->client, patterned(1, 200)) == SendResult::kFull));
    BOOST_TEST(!server.take(Kind::kWritable, c->client, 100ms), "writable with no room");
    BOOST_TEST(server.round_trip(*good, good_id, "beside a shrunk queue"));
    server.ep().close(c->client);
  }
  BOOST_TEST(server.round_trip(*good, good_id, "the end"));
  BOOST_TEST(server.poll_error().empty());
  server.ep().close(good_id);
}

BOOST_AUTO_TEST_CASE(a_client_flooding_its_bell_does_not_stop_the_server_serving_others) {
  MsgqServer server;
  auto [good, good_id] = server.connect_and_wait();
  RawClient noisy(server);
  const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
  BOOST_REQUIRE(c);
  std::atomic<bool> stop{false};
  std::jthread flood([&] {
    while (!stop.load()) noisy.bell->ring_always();
  });
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) {
    BOOST_REQUIRE(server.round_trip(*good, good_id, "through the noise " + std::to_string(i)));
  }
  BOOST_TEST_MESSAGE("200 round trips beside a flooded bell in "
                     << std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - start)
                            .count()
                     << " ms");
  // The noisy one is still served too: its bell is just a bell.
  noisy.send(wire::kData, bytes_of_text("noisy but fine"));
  const auto f = server.take(Kind::kFrame, c->client);
  BOOST_REQUIRE(f);
  BOOST_TEST(text_of(f->frame) == "noisy but fine");
  stop = true;
  flood.join();
  server.ep().close(c->client);
  server.ep().close(good_id);
}

BOOST_AUTO_TEST_CASE(a_grant_that_is_not_what_it_should_be_is_refused) {
  MsgqServer server;
  OwnedQueue keyed = OwnedQueue::create(static_cast<key_t>(random_u64() & 0x7ffffff0) + 1, "key");
  OwnedQueue open = OwnedQueue::create(IPC_PRIVATE, "open");
  msqid_ds ds{};
  BOOST_REQUIRE(stat_queue(open.id(), ds));
  ds.msg_perm.mode = 0666;
  BOOST_REQUIRE(::msgctl(open.id(), IPC_SET, &ds) == 0);
  const std::vector<std::function<void(ConnectOptions&)>> spoil = {
      [](ConnectOptions& o) { o.pass.channel["version"] = 1; },
      [](ConnectOptions& o) { o.pass.channel.erase("up"); },
      [](ConnectOptions& o) { o.pass.channel["down"] = "x"; },
      [](ConnectOptions& o) { o.pass.channel["down"] = o.pass.channel["up"]; },
      [&](ConnectOptions& o) { o.pass.channel["up"] = keyed.id(); },   // not keyless
      [&](ConnectOptions& o) { o.pass.channel["down"] = open.id(); },  // not 0600
      [](ConnectOptions& o) { o.pass.fds.pop_back(); },
      [](ConnectOptions& o) { std::swap(o.pass.fds[0], o.pass.fds[1]); },
  };
  for (std::size_t i = 0; i < spoil.size(); ++i) {
    ConnectOptions o = server.connect_options();
    const auto c = server.take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
    BOOST_REQUIRE(c);
    spoil[i](o);
    try {
      msgq_backend().connect(std::move(o));
      BOOST_ERROR("spoiled grant " << i << " accepted");
    } catch (const ConnectError& e) {
      BOOST_TEST((e.kind() == ConnectError::Kind::kOther), e.what());
      BOOST_TEST_MESSAGE("grant " << i << ": " << e.what());
    }
    // Its door connection closed with it: the server lets it go.
    const auto d = server.take(Kind::kDisconnected, c->client);
    BOOST_TEST(d.has_value(), "spoiled grant " << i << " kept connected");
    server.ep().close(c->client);
  }
}

BOOST_AUTO_TEST_CASE(queues_removed_by_the_server_end_the_connection_cleanly) {
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
  BOOST_TEST(a->server_alive());
}

BOOST_AUTO_TEST_CASE(nothing_is_left_in_ipcs_after_a_clean_shutdown) {
  std::vector<int> ids;
  {
    MsgqServer server;
    auto [a, a_id] = server.connect_and_wait();
    auto [b, b_id] = server.connect_and_wait();
    BOOST_TEST(server.round_trip(*a, a_id, "a"));
    server.ep().send(b_id, frame_of("unread"));  // lingers until the shutdown
    ids = recorded_queues(server.dir());
    BOOST_TEST(ids.size() == 4u);
    for (const int id : ids) BOOST_TEST(listed_by_ipcs(id), "queue " << id << " not in ipcs");
    server.ep().close(a_id);
  }  // the harness also checks for leftovers of this process
  for (const int id : ids) BOOST_TEST(!listed_by_ipcs(id), "queue " << id << " left in ipcs");
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
    auto client = msgq_backend().connect(arrive(rt.dir(), rt.instance(), deadline_after(5s)));
    BOOST_TEST((client->send(frame_of("ping"), deadline_after(5s)) == SendResult::kSent));
    Frame f;
    BOOST_REQUIRE((client->receive(f, deadline_after(5s)) == ReceiveResult::kFrame));
    recorded = recorded_queues(rt.dir());
    BOOST_TEST(recorded.size() == 2u);  // the client's up and down queue
    server.kill(SIGKILL);
    server.wait(5s);
    const auto start = std::chrono::steady_clock::now();
    BOOST_TEST((client->receive(f, deadline_after(3s)) == ReceiveResult::kClosed));
    BOOST_TEST((std::chrono::steady_clock::now() - start < 1s));
    BOOST_TEST(!client->server_alive());
  }
  for (int id : recorded) BOOST_TEST(queue_exists(id), "queue " << id << " vanished by itself");
  {
    // Forged lines naming the decoy: with the wrong creation time (pre-door format), and as
    // a queue handed to another account.
    std::ofstream out(rt.dir() / "msgq.queues", std::ios::app);
    out << decoy.id() << " 0 " << decoy.ctime() - 1 << "\n";
    out << decoy.id() << " 0 " << decoy.ctime() << " " << ::geteuid() + 1 << "\n";
  }
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const auto stale = dir.stale_info();
  BOOST_REQUIRE(stale);
  const auto removed = msgq_backend().cleanup({dir.path(), stale->pid, stale->objects});
  BOOST_TEST(removed.size() == 2u);
  for (const auto& line : removed) BOOST_TEST_MESSAGE("removed: " << line);
  for (int id : recorded) BOOST_TEST(!queue_exists(id));
  for (int id : recorded) BOOST_TEST(!listed_by_ipcs(id));
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
  const key_t key = static_cast<key_t>(random_u64() & 0x7ffffff0) + 1;
  OwnedQueue first = OwnedQueue::create(key, "first");
  put(first.id(), 1, "x", 1);
  BOOST_CHECK_EXCEPTION(OwnedQueue::create(key, "second"), std::system_error,
                        [](const std::system_error& e) { return e.code().value() == EEXIST; });
  msqid_ds ds{};
  BOOST_REQUIRE(stat_queue(first.id(), ds));
  BOOST_TEST(ds.msg_qnum == 1u);  // untouched
}

BOOST_AUTO_TEST_CASE(the_record_names_exactly_the_live_queues) {
  TempRuntime rt;
  fs::create_directories(rt.dir());
  const fs::path path = rt.dir() / "msgq.queues";
  {
    auto record = mq::QueueRecord::create(path);
    OwnedQueue a = OwnedQueue::create_for(::geteuid(), "a");
    OwnedQueue b = OwnedQueue::create_for(::geteuid(), "b");
    OwnedQueue c = OwnedQueue::create(IPC_PRIVATE, "c");
    OwnedQueue old = OwnedQueue::create(IPC_PRIVATE, "a queue of the pre-door msgq");
    for (const OwnedQueue* q : {&a, &b, &c}) record.add(*q);
    BOOST_TEST(record.lines() == 3u);
    record.rewrite({&a, &c});  // b is no longer the server's to remove
    BOOST_TEST(record.lines() == 2u);
    BOOST_TEST((recorded_queues(rt.dir()) == std::vector<int>{a.id(), c.id()}));
    {
      std::ofstream out(path, std::ios::app);
      out << old.id() << " " << old.key() << " " << old.ctime() << "\n";
    }
    // The owner of a handed queue may change it (ctime moves on): still ours to remove.
    msqid_ds ds{};
    BOOST_REQUIRE(stat_queue(a.id(), ds));
    ds.msg_qbytes = 1000;
    while (std::time(nullptr) <= ds.msg_ctime) std::this_thread::sleep_for(10ms);  // ctime: s
    BOOST_REQUIRE(::msgctl(a.id(), IPC_SET, &ds) == 0);
    const auto removed = mq::remove_recorded_queues(path);
    BOOST_TEST(removed.size() == 3u);
    BOOST_TEST(!queue_exists(a.id()));
    BOOST_TEST(queue_exists(b.id()));
    BOOST_TEST(!queue_exists(c.id()));
    BOOST_TEST(!queue_exists(old.id()));
  }
  BOOST_TEST(!fs::exists(path));  // the record goes with its owner
  BOOST_TEST(mq::remove_recorded_queues(path).empty());
  fs::remove_all(rt.base());
}

BOOST_AUTO_TEST_CASE(an_idle_server_sleeps) {
  MsgqServer server(32);
  std::vector<std::pair<std::unique_ptr<ClientConnection>, ClientId>> clients;
  for (int i = 0; i < 20; ++i) clients.push_back(server.connect_and_wait());
  // Waits for the poll() loop to end `n` more polls (at least `n` ever comes: the loop's own
  // 1-s deadline ends one); returns how long that took.
  const auto polls_after = [&](std::uint64_t n) {
    const auto from = server.polls();
    const auto start = std::chrono::steady_clock::now();
    const auto end = start + 30s;
    while (server.polls() < from + n && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(5ms);
    }
    BOOST_REQUIRE_MESSAGE(server.polls() >= from + n, "the poll() loop stopped");
    return std::chrono::steady_clock::now() - start;
  };
  const auto idle = [&](const char* when) {
    polls_after(1);  // whatever was going on has ended with a poll
    const auto cpu = cpu_time();
    // Two more polls of an idle server are its 1-s deadlines: at least a second apart, and
    // it spends next to no CPU meanwhile.
    const auto took = polls_after(2);
    const auto used = cpu_time() - cpu;
    BOOST_TEST_MESSAGE(when << ": 2 polls in "
                            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                            << " ms, " << used.count() << " us CPU");
    BOOST_TEST((took >= 900ms), when);
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

// The client's reader blocks in msgrcv itself; wake(), deadlines and the server's death reach it
// through wake-ups in its own down queue, which never pile up and cannot be forged to any
// effect.
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
    const pid_t reader = ::gettid();
    std::atomic<std::int64_t> woken_at{0};
    std::atomic<bool> blocked{false};
    std::jthread waker([&, &c = c] {
      // Only once the reader sleeps in msgrcv: what ends its wait is this wake().
      blocked = wait_thread_sleeping(reader, 10000ms);
      woken_at = std::chrono::steady_clock::now().time_since_epoch().count();
      c->wake();
    });
    t = took([&, &c = c] { BOOST_TEST((c->receive(f, kNoDeadline) == ReceiveResult::kTimeout)); });
    const auto returned_at = std::chrono::steady_clock::now().time_since_epoch().count();
    waker.join();
    BOOST_TEST(blocked.load());
    BOOST_TEST(returned_at >= woken_at.load());  // not before the wake()
    BOOST_TEST((t < 20s));
  }
  // Many wake()s leave one wake-up in the queue at most: frames still fit.
  const auto queues = server.ep().objects().at("queues");
  BOOST_REQUIRE(queues.size() == 2u);
  const int down = queues[1].at("id").get<int>();  // up, then down
  for (int i = 0; i < 10000; ++i) {
    c->wake();
    server.ep().wake();
  }
  msqid_ds ds{};
  BOOST_REQUIRE(stat_queue(down, ds));
  BOOST_TEST(ds.msg_qnum <= 1u);
  BOOST_TEST((server.ep().send(id, frame_of("after the wake-ups")) == SendResult::kSent));
  BOOST_TEST((c->receive(f, deadline_after(5s)) == ReceiveResult::kTimeout));  // woken before
  BOOST_REQUIRE((c->receive(f, deadline_after(5s)) == ReceiveResult::kFrame));
  BOOST_TEST(text_of(f) == "after the wake-ups");
  // A forged wake-up in the client's queue does not end its wait early.
  const wire::WakeMsg forged{777};
  put(down, wire::kWake, &forged, sizeof forged);
  t = took([&, &c = c] {
    BOOST_TEST((c->receive(f, deadline_after(200ms)) == ReceiveResult::kTimeout));
  });
  BOOST_TEST((t >= 200ms && t < 1s));
  // The server's own deadline ends its poll() when nothing happens: about one per second.
  // Two polls ended by it are at least a second apart.
  const auto polls = server.polls();
  const auto idle_from = std::chrono::steady_clock::now();
  while (server.polls() < polls + 2 && std::chrono::steady_clock::now() < idle_from + 30s) {
    std::this_thread::sleep_for(5ms);
  }
  BOOST_REQUIRE(server.polls() >= polls + 2);
  BOOST_TEST((std::chrono::steady_clock::now() - idle_from >= 900ms));
  BOOST_TEST(server.round_trip(*c, id, "still fine"));
  server.ep().close(id);
}

BOOST_AUTO_TEST_CASE(a_stolen_wake_up_does_not_put_the_reader_to_sleep_for_good) {
  // Another process of the client's account takes the wake-ups out of its down queue. Once
  // one is stolen, the reader must still wake for its deadline: another comes after a second.
  MsgqServer server;
  auto [c, id] = server.connect_and_wait();
  const int down = server.ep().objects().at("queues")[1].at("id").get<int>();
  std::atomic<bool> stop{false}, done{false};
  std::atomic<int> stolen{0};
  std::atomic<pid_t> thief_tid{0};
  std::thread thief([&] {
    thief_tid = ::gettid();
    struct {
      long mtype;
      std::byte text[64];
    } m{};
    while (!stop.load()) {
      if (::msgrcv(down, &m, sizeof m.text, wire::kWake, MSG_NOERROR) >= 0) ++stolen;
    }
    done = true;
  });
  // The thief waits first (asleep in msgrcv): the kernel serves it first.
  while (thief_tid.load() == 0) std::this_thread::yield();
  BOOST_REQUIRE(wait_thread_sleeping(thief_tid.load(), 10000ms));
  Frame f;
  const auto start = std::chrono::steady_clock::now();
  BOOST_TEST((c->receive(f, deadline_after(100ms)) == ReceiveResult::kTimeout));
  const auto took = std::chrono::steady_clock::now() - start;
  BOOST_TEST_MESSAGE("woken after "
                     << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                     << " ms, " << stolen.load() << " wake-ups stolen");
  BOOST_TEST(stolen.load() > 0);
  BOOST_TEST((took < 3s));  // asleep for good without the second wake-up
  stop = true;
  // The thief is blocked in msgrcv: wake-ups of our own end it.
  const wire::WakeMsg bogus{1};
  while (!done.load()) {
    put(down, wire::kWake, &bogus, sizeof bogus);
    std::this_thread::sleep_for(20ms);
  }
  thief.join();
  BOOST_TEST(stolen.load() > 0);
  BOOST_TEST(server.round_trip(*c, id, "after the theft"));
  server.ep().close(id);
}

BOOST_AUTO_TEST_SUITE_END()

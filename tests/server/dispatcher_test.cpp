// The dispatcher (server/dispatcher.hpp) between a scripted ServerEndpoint and a real
// ChatServer: per-client order, spreading over workers, running on the I/O thread, and
// backpressure from a full worker queue. The fake endpoint tests the dispatcher's own logic;
// the real transports are covered by the transport and integration suites.
#include "server/dispatcher.hpp"

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/log.hpp"
#include "common/protocol.hpp"
#include "common/time.hpp"

namespace chat::server {
namespace {

namespace proto = protocol;
using transport::ServerEvent;
using namespace std::chrono_literals;

// A ServerEndpoint whose poll() hands out what the test fed it, one feed() per poll, and which
// records every frame sent, decoded, with the thread that sent it. Sends to a held client wait
// until it is released. Thread-safe.
class FakeEndpoint final : public transport::ServerEndpoint {
 public:
  struct Sent {
    std::thread::id thread;
    proto::Message message;
  };

  void poll(std::vector<ServerEvent>& events, Deadline deadline) override {
    std::unique_lock lock(mutex_);
    poller_ = std::this_thread::get_id();
    cv_.wait_until(lock, deadline, [&] { return !script_.empty() || woken_; });
    woken_ = false;
    if (script_.empty()) return;
    for (auto& ev : script_.front()) events.push_back(std::move(ev));
    script_.pop_front();
  }

  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    SendResult r = SendResult::kSent;
    send_batch(id, std::span(&frame, 1), r);
    return r;
  }

  std::size_t send_batch(ClientId id, std::span<const std::span<const std::byte>> frames,
                         SendResult& stopped) override {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !held_.contains(id); });
    for (const auto& frame : frames) {
      proto::DecodeResult r = proto::decode(frame);
      if (r.message) {
        sent_[id].push_back({std::this_thread::get_id(), std::move(*r.message)});
      } else {
        ++decode_errors_;
      }
    }
    stopped = SendResult::kSent;
    return frames.size();
  }

  void close(ClientId) override {}
  void wake() override {
    std::lock_guard lock(mutex_);
    woken_ = true;
    cv_.notify_all();
  }
  std::size_t buffered(ClientId) override { return 0; }
  nlohmann::json objects() const override { return nlohmann::json::object(); }

  // What the next poll() not yet fed returns.
  void feed(std::vector<ServerEvent> events) {
    std::lock_guard lock(mutex_);
    script_.push_back(std::move(events));
    cv_.notify_all();
  }
  // Polls fed that no poll() has returned yet.
  std::size_t unpolled() const {
    std::lock_guard lock(mutex_);
    return script_.size();
  }
  // Until release(), sends to `id` wait.
  void hold(ClientId id) {
    std::lock_guard lock(mutex_);
    held_.insert(id);
  }
  void release() {
    std::lock_guard lock(mutex_);
    held_.clear();
    cv_.notify_all();
  }
  std::vector<Sent> sent(ClientId id) const {
    std::lock_guard lock(mutex_);
    const auto it = sent_.find(id);
    return it == sent_.end() ? std::vector<Sent>{} : it->second;
  }
  std::thread::id poller() const {
    std::lock_guard lock(mutex_);
    return poller_;
  }
  int decode_errors() const {
    std::lock_guard lock(mutex_);
    return decode_errors_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::vector<ServerEvent>> script_;
  bool woken_ = false;
  std::set<ClientId> held_;
  std::map<ClientId, std::vector<Sent>> sent_;
  std::thread::id poller_;
  int decode_errors_ = 0;
};

// A ChatServer on a FakeEndpoint, dispatched by a Dispatcher with `workers` workers.
class Harness {
 public:
  explicit Harness(std::size_t workers)
      : chat(link, logger, {}),
        dispatcher(std::make_unique<Dispatcher>(endpoint, chat, workers, logger)) {}
  ~Harness() {
    endpoint.release();  // a failed check must not leave a worker waiting in a send
    dispatcher->stop();
    BOOST_TEST(endpoint.decode_errors() == 0, "the server sent frames that do not decode");
  }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  FakeEndpoint endpoint;
  EndpointLink link{endpoint};
  Logger logger{"dispatcher_test", LogLevel::kError};
  ChatServer chat;
  std::unique_ptr<Dispatcher> dispatcher;
};

ServerEvent connected(ClientId id) {
  ServerEvent ev;
  ev.kind = ServerEvent::Kind::kConnected;
  ev.client = id;
  ev.pid = static_cast<pid_t>(1000 + id);
  return ev;
}

ServerEvent frame(ClientId id, const proto::Message& m) {
  ServerEvent ev;
  ev.kind = ServerEvent::Kind::kFrame;
  ev.client = id;
  ev.frame = proto::encode(m);
  return ev;
}

ServerEvent say(ClientId id, const std::string& room, const std::string& text) {
  return frame(id, proto::Say{room, text, false});
}

ServerEvent closed(ClientId id) {
  ServerEvent ev;
  ev.kind = ServerEvent::Kind::kDisconnected;
  ev.client = id;
  ev.gone = ServerEvent::Gone::kClosed;
  return ev;
}

// The texts of the room messages from `nick` among `sent`, in the order they were sent.
std::vector<std::string> texts_from(const std::vector<FakeEndpoint::Sent>& sent,
                                    const std::string& nick) {
  std::vector<std::string> out;
  for (const auto& s : sent) {
    const auto* m = std::get_if<proto::RoomMessage>(&s.message);
    if (m != nullptr && m->from == nick) out.push_back(m->text);
  }
  return out;
}

// The threads that sent the room messages from `nick` whose text starts with `prefix`.
std::set<std::thread::id> senders_of(const std::vector<FakeEndpoint::Sent>& sent,
                                     const std::string& nick, const std::string& prefix) {
  std::set<std::thread::id> out;
  for (const auto& s : sent) {
    const auto* m = std::get_if<proto::RoomMessage>(&s.message);
    if (m != nullptr && m->from == nick && m->text.starts_with(prefix)) out.insert(s.thread);
  }
  return out;
}

std::vector<std::string> numbered(const std::string& prefix, int from, int to) {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

// Waits up to `timeout` for `done`.
bool eventually(const std::function<bool()>& done, Clock::duration timeout = 20s) {
  const Deadline deadline = deadline_after(timeout);
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Connects `id` as `nick` in `room` and waits for its welcome.
void join(Harness& h, ClientId id, const std::string& nick, const std::string& room) {
  h.endpoint.feed({connected(id), frame(id, proto::Hello{nick, room})});
  BOOST_REQUIRE(eventually([&] {
    for (const auto& s : h.endpoint.sent(id)) {
      if (std::holds_alternative<proto::Welcome>(s.message)) return true;
    }
    return false;
  }));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(dispatcher)

BOOST_AUTO_TEST_CASE(each_clients_events_are_handled_in_the_order_polled) {
  Harness h(3);
  join(h, 1, "alice", "lobby");
  join(h, 2, "bob", "lobby");
  // Polls of every size around the thresholds: some run on the I/O thread, some are queued,
  // some are split into several ChatServer batches; the two senders share each poll.
  constexpr int kMessages = 300;
  int a = 0, b = 0;
  for (std::size_t size = 1; a < kMessages; size = size % (2 * kFramesPerBatch + 3) + 1) {
    std::vector<ServerEvent> poll;
    for (std::size_t i = 0; i < size && a < kMessages; ++i) {
      poll.push_back(say(1, "lobby", "a" + std::to_string(a++)));
      if (i % 3 == 0 && b < kMessages) poll.push_back(say(2, "lobby", "b" + std::to_string(b++)));
    }
    h.endpoint.feed(std::move(poll));
  }
  std::vector<ServerEvent> last;
  while (b < kMessages) last.push_back(say(2, "lobby", "b" + std::to_string(b++)));
  last.push_back(closed(2));  // after its frames in the poll, so after them in the room
  h.endpoint.feed(std::move(last));

  // Alice sees both streams whole and in order, and bob's part after his last message.
  const auto bob_parted = [](const FakeEndpoint::Sent& s) {
    const auto* p = std::get_if<proto::Parted>(&s.message);
    return p != nullptr && p->nick == "bob";
  };
  BOOST_REQUIRE(eventually([&] {
    const auto sent = h.endpoint.sent(1);
    return texts_from(sent, "alice").size() == std::size_t{kMessages} &&
           std::any_of(sent.begin(), sent.end(), bob_parted);
  }));
  const auto to_alice = h.endpoint.sent(1);
  BOOST_TEST(texts_from(to_alice, "alice") == numbered("a", 0, kMessages),
             boost::test_tools::per_element());
  BOOST_TEST(texts_from(to_alice, "bob") == numbered("b", 0, kMessages),
             boost::test_tools::per_element());
  const auto part = std::find_if(to_alice.begin(), to_alice.end(), bob_parted);
  BOOST_TEST(texts_from({part, to_alice.end()}, "bob").empty());
  // Bob, gone, was sent what was handed over before he left: each stream in order.
  const auto to_bob = h.endpoint.sent(2);
  for (const auto& [nick, prefix] : {std::pair{"alice", "a"}, std::pair{"bob", "b"}}) {
    const auto got = texts_from(to_bob, nick);
    BOOST_TEST(got == numbered(prefix, 0, static_cast<int>(got.size())),
               boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(different_clients_can_be_handled_by_different_workers) {
  Harness h(2);
  join(h, 1, "alice", "a");  // worker 1
  join(h, 2, "bob", "b");    // worker 0
  // More than kInlineEvents each: both shares go to their workers' queues.
  std::vector<ServerEvent> poll;
  for (std::size_t i = 0; i < 2 * kInlineEvents; ++i) {
    poll.push_back(say(1, "a", "x" + std::to_string(i)));
    poll.push_back(say(2, "b", "x" + std::to_string(i)));
  }
  h.endpoint.feed(std::move(poll));
  BOOST_REQUIRE(eventually([&] {
    return texts_from(h.endpoint.sent(1), "alice").size() == 2 * kInlineEvents &&
           texts_from(h.endpoint.sent(2), "bob").size() == 2 * kInlineEvents;
  }));
  const auto alices = senders_of(h.endpoint.sent(1), "alice", "x");
  const auto bobs = senders_of(h.endpoint.sent(2), "bob", "x");
  BOOST_TEST_REQUIRE(alices.size() == 1u);  // one client, one worker
  BOOST_TEST_REQUIRE(bobs.size() == 1u);
  BOOST_TEST((*alices.begin() != *bobs.begin()));
  BOOST_TEST((*alices.begin() != h.endpoint.poller()));
  BOOST_TEST((*bobs.begin() != h.endpoint.poller()));
}

BOOST_AUTO_TEST_CASE(a_small_poll_for_an_idle_worker_runs_on_the_io_thread) {
  Harness h(1);
  join(h, 1, "alice", "lobby");
  // The worker goes idle soon after its last task; within a few tries it is found idle.
  bool inline_run = false;
  for (int i = 0; i < 100 && !inline_run; ++i) {
    const std::string text = "t" + std::to_string(i);
    h.endpoint.feed({say(1, "lobby", text)});
    BOOST_REQUIRE(
        eventually([&] { return !senders_of(h.endpoint.sent(1), "alice", text).empty(); }));
    inline_run = senders_of(h.endpoint.sent(1), "alice", text) ==
                 std::set<std::thread::id>{h.endpoint.poller()};
    std::this_thread::sleep_for(5ms);
  }
  BOOST_TEST(inline_run);
}

BOOST_AUTO_TEST_CASE(a_full_worker_queue_holds_up_polling_and_loses_nothing) {
  Harness h(1);
  join(h, 1, "alice", "lobby");
  h.endpoint.hold(1);  // the worker's next delivery to alice waits
  std::vector<ServerEvent> first;
  for (std::size_t i = 0; i <= kInlineEvents; ++i) {
    first.push_back(say(1, "lobby", "m" + std::to_string(i)));
  }
  h.endpoint.feed(std::move(first));  // queued: the worker takes it and gets stuck delivering
  // Single frames, each a task of its own since the worker is busy: more than its queue and
  // the tasks it can put its delivery off for.
  const int total = static_cast<int>(kInlineEvents + 1 + kTasksPerWorker) + 4 * kMaxDeferredTasks;
  for (int i = static_cast<int>(kInlineEvents) + 1; i < total; ++i) {
    h.endpoint.feed({say(1, "lobby", "m" + std::to_string(i))});
  }
  BOOST_REQUIRE(eventually([&] { return h.dispatcher->pending_tasks() == kTasksPerWorker; }));
  std::this_thread::sleep_for(50ms);
  BOOST_TEST(h.dispatcher->pending_tasks() == kTasksPerWorker);  // no more, none dropped
  BOOST_TEST(h.endpoint.unpolled() > 0u);  // the I/O thread waits for room instead of polling

  h.endpoint.release();
  BOOST_REQUIRE(eventually([&] {
    return texts_from(h.endpoint.sent(1), "alice").size() == static_cast<std::size_t>(total);
  }));
  BOOST_TEST(texts_from(h.endpoint.sent(1), "alice") == numbered("m", 0, total),
             boost::test_tools::per_element());
  BOOST_TEST(h.endpoint.unpolled() == 0u);
}

BOOST_AUTO_TEST_CASE(stop_runs_what_is_queued_and_is_idempotent) {
  Harness h(1);
  join(h, 1, "alice", "lobby");
  h.endpoint.hold(1);
  std::vector<ServerEvent> poll;
  for (std::size_t i = 0; i < 20; ++i) {
    poll.clear();
    for (std::size_t k = 0; k <= kInlineEvents; ++k) {
      poll.push_back(say(1, "lobby", "s" + std::to_string(i * (kInlineEvents + 1) + k)));
    }
    h.endpoint.feed(std::move(poll));
  }
  BOOST_REQUIRE(eventually([&] { return h.endpoint.unpolled() == 0; }));
  std::thread releaser([&] {
    std::this_thread::sleep_for(50ms);
    h.endpoint.release();
  });
  h.dispatcher->stop();  // waits for the held delivery, then runs the rest
  releaser.join();
  h.dispatcher->stop();
  const int total = static_cast<int>(20 * (kInlineEvents + 1));
  BOOST_TEST(texts_from(h.endpoint.sent(1), "alice") == numbered("s", 0, total),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat::server

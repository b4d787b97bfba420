#include "tests/support/server_harness.hpp"

#include <boost/test/unit_test.hpp>

#include "common/protocol.hpp"
#include "tests/support/frames.hpp"

namespace chat::test {

using transport::ReceiveResult;
using transport::SendResult;

ListeningEndpoint::ListeningEndpoint(const transport::Backend& backend, EndpointOptions options)
    : backend_(backend), dir_(InstanceDir::acquire(rt_.base(), rt_.instance())) {
  if (!options.log_as.empty()) logger_.emplace(options.log_as, LogLevel::kWarn);
  transport::ListenOptions lo;
  lo.dir = dir_.path();
  lo.instance = rt_.instance();
  lo.max_clients = options.max_clients;
  lo.logger = logger_ ? &*logger_ : nullptr;
  ep_ = backend.listen(lo);
  dir_.publish(
      {rt_.instance(), std::string(backend.name), ::getpid(), protocol::kVersion, ep_->objects()});
}

ListeningEndpoint::~ListeningEndpoint() {
  ep_.reset();
  dir_.remove();
  check_no_leftovers(rt_, pids_);
}

transport::ConnectOptions ListeningEndpoint::connect_options() const {
  return transport::arrive(dir_.path(), rt_.instance(), deadline_after(5s));
}

std::unique_ptr<transport::ClientConnection> ListeningEndpoint::connect() const {
  return backend_.connect(connect_options());
}

ServerHarness::ServerHarness(const transport::Backend& backend, EndpointOptions options,
                             std::chrono::milliseconds poll_wait)
    : ListeningEndpoint(backend, std::move(options)) {
  thread_ = std::thread([this, poll_wait] {
    std::vector<ServerEvent> evs;
    try {
      while (!stop_) {
        evs.clear();
        ep().poll(evs, deadline_after(poll_wait));
        ++polls_;
        std::lock_guard lock(mutex_);
        for (auto& e : evs) events_.push_back(std::move(e));
        if (!evs.empty()) cv_.notify_all();
      }
    } catch (const std::exception& e) {
      std::lock_guard lock(mutex_);
      poll_error_ = e.what();
    }
  });
}

ServerHarness::~ServerHarness() {
  stop_ = true;
  ep().wake();
  thread_.join();
}

std::pair<std::unique_ptr<transport::ClientConnection>, transport::ClientId>
ServerHarness::connect_and_wait() {
  auto c = connect();
  const auto e = take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
  BOOST_REQUIRE(e);
  return {std::move(c), e->client};
}

ServerHarness::Burst ServerHarness::connect_burst(std::size_t n) {
  Burst burst;
  burst.clients.resize(n);
  std::mutex errors_mutex;
  {
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        try {
          burst.clients[i] = connect();
        } catch (const std::exception& e) {
          std::lock_guard lock(errors_mutex);
          burst.errors.push_back(e.what());
        }
      });
    }
  }
  while (burst.ids.size() < n) {
    const auto e = take([](const ServerEvent& e) { return e.kind == Kind::kConnected; });
    if (!e) break;
    burst.ids.push_back(e->client);
  }
  return burst;
}

std::optional<ServerEvent> ServerHarness::next(const std::function<bool(const ServerEvent&)>& pred,
                                               std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  const auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    while (!events_.empty()) {
      ServerEvent e = std::move(events_.front());
      events_.pop_front();
      if (pred(e)) return e;
    }
    if (cv_.wait_until(lock, end) == std::cv_status::timeout && events_.empty())
      return std::nullopt;
  }
}

std::optional<ServerEvent> ServerHarness::next(Kind kind, std::chrono::milliseconds timeout) {
  return next([kind](const ServerEvent& e) { return e.kind == kind; }, timeout);
}

std::optional<ServerEvent> ServerHarness::take(const std::function<bool(const ServerEvent&)>& pred,
                                               std::chrono::milliseconds timeout) {
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

std::optional<ServerEvent> ServerHarness::take(Kind kind, ClientId id,
                                               std::chrono::milliseconds timeout) {
  return take([=](const ServerEvent& e) { return e.kind == kind && e.client == id; }, timeout);
}

void ServerHarness::send_all(ClientId id, const Frame& frame) {
  for (;;) {
    const SendResult r = ep().send(id, frame);
    if (r == SendResult::kSent) return;
    BOOST_REQUIRE(r == SendResult::kFull);
    BOOST_REQUIRE_MESSAGE(take(Kind::kWritable, id, 10s), "no kWritable after kFull");
  }
}

bool ServerHarness::round_trip(ClientConnection& c, ClientId id, const std::string& text) {
  if (c.send(frame_of(text), deadline_after(5s)) != SendResult::kSent) return false;
  const auto e = take(Kind::kFrame, id);
  if (!e || text_of(e->frame) != text) return false;
  if (ep().send(id, e->frame) != SendResult::kSent) return false;
  Frame f;
  return c.receive(f, deadline_after(5s)) == ReceiveResult::kFrame && text_of(f) == text;
}

std::string ServerHarness::poll_error() {
  std::lock_guard lock(mutex_);
  return poll_error_;
}

}  // namespace chat::test

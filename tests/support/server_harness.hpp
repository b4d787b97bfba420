// An in-process ServerEndpoint of any backend, with its poll loop on a thread of its own,
// for tests that talk to a transport directly.
#pragma once

#include <boost/test/unit_test.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <optional>
#include <thread>

#include "common/instance.hpp"
#include "common/protocol.hpp"
#include "tests/support/support.hpp"
#include "transport/factory.hpp"

namespace chat::test {

using transport::ServerEvent;

// An in-process server endpoint with its poll loop on a thread of its own.
class ServerHarness {
  using Kind = ServerEvent::Kind;
  using Backend = transport::Backend;
  using ServerEndpoint = transport::ServerEndpoint;
  using ConnectOptions = transport::ConnectOptions;
  using ClientConnection = transport::ClientConnection;
  using ListenOptions = transport::ListenOptions;
  using ClientId = transport::ClientId;
  using Frame = transport::Frame;
  using SendResult = transport::SendResult;

 public:
  explicit ServerHarness(const Backend& backend, std::size_t max_clients = 64)
      : backend_(backend), dir_(InstanceDir::acquire(rt_.base(), rt_.instance())) {
    ListenOptions lo;
    lo.dir = dir_.path();
    lo.instance = rt_.instance();
    lo.max_clients = max_clients;
    ep_ = backend.listen(lo);
    InstanceInfo info{rt_.instance(), std::string(backend.name), ::getpid(), protocol::kVersion,
                      ep_->objects()};
    dir_.publish(info);
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

  ~ServerHarness() {
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
  void also_check_pid(pid_t p) { pids_.push_back(p); }

  ConnectOptions connect_options() const {
    ConnectOptions co;
    co.dir = dir_.path();
    co.instance = rt_.instance();
    co.server_pid = ::getpid();
    co.objects = ep_->objects();
    co.deadline = deadline_after(5s);
    return co;
  }
  std::unique_ptr<ClientConnection> connect() { return backend_.connect(connect_options()); }

  // The next event matching `pred`, or nullopt after `timeout`. Skipped events are dropped.
  std::optional<ServerEvent> next(const std::function<bool(const ServerEvent&)>& pred,
                                  std::chrono::milliseconds timeout = 5000ms) {
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
  std::optional<ServerEvent> next(Kind kind, std::chrono::milliseconds timeout = 5000ms) {
    return next([kind](const ServerEvent& e) { return e.kind == kind; }, timeout);
  }

  // Sends `frame`, waiting for kWritable whenever the client's buffers are full. Events that
  // are not kWritable for `id` are kept for later next() calls.
  void send_all(ClientId id, const Frame& frame) {
    for (;;) {
      const SendResult r = ep_->send(id, frame);
      if (r == SendResult::kSent) return;
      BOOST_REQUIRE(r == SendResult::kFull);
      std::unique_lock lock(mutex_);
      const bool got = cv_.wait_for(lock, 10s, [&] {
        for (auto it = events_.begin(); it != events_.end(); ++it) {
          if (it->kind == Kind::kWritable && it->client == id) {
            events_.erase(it);
            return true;
          }
        }
        return false;
      });
      BOOST_REQUIRE_MESSAGE(got, "no kWritable after kFull");
    }
  }

 private:
  const Backend& backend_;
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

}  // namespace chat::test

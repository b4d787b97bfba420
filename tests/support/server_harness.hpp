// In-process ServerEndpoints of any backend, for tests that talk to a transport directly: a
// ListeningEndpoint the test polls itself, and a ServerHarness that polls on a thread of its
// own and keeps the events until the test takes them.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/instance.hpp"
#include "common/log.hpp"
#include "tests/support/support.hpp"
#include "transport/factory.hpp"

namespace chat::test {

using transport::ServerEvent;

struct EndpointOptions {
  std::size_t max_clients = 64;
  // Non-empty: the endpoint's warnings go to stderr (the test log) under this program name.
  std::string log_as;
};

// An endpoint of `backend` listening in a private runtime dir, published there as chatd
// publishes its own so that clients in other processes find it too. Only the test polls it.
// Destruction closes it, removes the instance dir and checks that nothing is left of it, of
// this process, or of the processes named by also_check_pid().
class ListeningEndpoint {
 public:
  explicit ListeningEndpoint(const transport::Backend& backend, EndpointOptions options = {});
  ~ListeningEndpoint();
  ListeningEndpoint(const ListeningEndpoint&) = delete;
  ListeningEndpoint& operator=(const ListeningEndpoint&) = delete;

  transport::ServerEndpoint& ep() { return *ep_; }
  const TempRuntime& rt() const { return rt_; }
  std::filesystem::path dir() const { return dir_.path(); }
  void also_check_pid(pid_t pid) { pids_.push_back(pid); }

  // What a client needs to connect to this endpoint, with a deadline 5 s from now.
  transport::ConnectOptions connect_options() const;
  // A client of the same backend. Backends that hand-shake need the server polled meanwhile.
  std::unique_ptr<transport::ClientConnection> connect() const;

 private:
  const transport::Backend& backend_;
  std::optional<Logger> logger_;  // before ep_, which may log until it is destroyed
  TempRuntime rt_;
  InstanceDir dir_;
  std::unique_ptr<transport::ServerEndpoint> ep_;
  std::vector<pid_t> pids_{::getpid()};
};

// A ListeningEndpoint whose poll() loop runs on a thread of its own, each poll() waiting at
// most `poll_wait`. Every event is kept until a test takes it; next() and take() may be called
// from any thread. The loop stops before the endpoint is destroyed, or when poll() throws.
class ServerHarness : public ListeningEndpoint {
  using Kind = ServerEvent::Kind;
  using ClientConnection = transport::ClientConnection;
  using ClientId = transport::ClientId;
  using Frame = transport::Frame;

 public:
  explicit ServerHarness(const transport::Backend& backend, EndpointOptions options = {},
                         std::chrono::milliseconds poll_wait = 100ms);
  ~ServerHarness();

  // Connects a client and takes the server's kConnected for it (failing the test without one
  // within 5 s): the client and its id.
  std::pair<std::unique_ptr<ClientConnection>, ClientId> connect_and_wait();

  // What connect_burst() got.
  struct Burst {
    std::vector<std::unique_ptr<ClientConnection>> clients;  // null where connect() threw
    std::vector<std::string> errors;                         // what those connect()s threw
    std::vector<ClientId> ids;                               // of the kConnected taken
  };
  // Connects `n` clients at once, each from a thread of its own; then takes kConnected events
  // until there are `n` or none comes for 5 s.
  Burst connect_burst(std::size_t n);

  // The next event matching `pred`, or nullopt after `timeout`. Skipped events are dropped.
  std::optional<ServerEvent> next(const std::function<bool(const ServerEvent&)>& pred,
                                  std::chrono::milliseconds timeout = 5000ms);
  std::optional<ServerEvent> next(Kind kind, std::chrono::milliseconds timeout = 5000ms);

  // Removes and returns the first event (already reported or still to come within `timeout`)
  // matching `pred`; other events stay for later.
  std::optional<ServerEvent> take(const std::function<bool(const ServerEvent&)>& pred,
                                  std::chrono::milliseconds timeout = 5000ms);
  std::optional<ServerEvent> take(Kind kind, ClientId id,
                                  std::chrono::milliseconds timeout = 5000ms);

  // Sends `frame`, waiting for kWritable whenever the client's buffers are full. Events that
  // are not kWritable for `id` are kept for later.
  void send_all(ClientId id, const Frame& frame);

  // A frame `text` from client `c` (known to the server as `id`) to the server and back; true
  // if it arrived intact both ways within 5 s each.
  bool round_trip(ClientConnection& c, ClientId id, const std::string& text);

  // poll() calls so far.
  std::uint64_t polls() const { return polls_; }
  // What the poll() that ended the loop threw; empty while the loop runs. After it, no event
  // comes any more.
  std::string poll_error();

 private:
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> polls_{0};
  std::mutex mutex_;  // guards events_ and poll_error_
  std::condition_variable cv_;
  std::deque<ServerEvent> events_;
  std::string poll_error_;
  std::thread thread_;  // last: started once everything it uses exists
};

}  // namespace chat::test

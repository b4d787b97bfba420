#include "server/daemon.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "common/instance.hpp"
#include "common/protocol.hpp"
#include "server/chat_server.hpp"
#include "server/service.hpp"
#include "server/status.hpp"
#include "server/thread_pool.hpp"
#include "transport/factory.hpp"

namespace chat::server {
namespace {

constexpr std::size_t kTasksPerWorker = 256;  // batches of events, not single frames
constexpr int kMaxIoFailures = 100;           // in a row, 10 ms apart
// A batch this small for an idle worker runs on the I/O thread itself: handing it over would
// cost a wake-up of the worker, the largest part of a round trip through an idle server.
constexpr std::size_t kInlineEvents = 4;

// ChatServer's Link over a transport endpoint.
class EndpointLink final : public Link {
 public:
  explicit EndpointLink(transport::ServerEndpoint& endpoint) : endpoint_(endpoint) {}
  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    return endpoint_.send(id, frame);
  }
  std::size_t send_batch(ClientId id, std::span<const std::span<const std::byte>> frames,
                         SendResult& stopped) override {
    return endpoint_.send_batch(id, frames, stopped);
  }
  void close(ClientId id) override { endpoint_.close(id); }
  std::size_t buffered(ClientId id) override { return endpoint_.buffered(id); }

 private:
  transport::ServerEndpoint& endpoint_;
};

// Consecutive frames handled as one ChatServer batch at most: bounds how long the first
// message of a batch waits for the deliveries of the last.
constexpr std::size_t kFramesPerBatch = 32;

void dispatch(ChatServer& chat, transport::ServerEvent& ev);

// While a worker has more tasks queued, the frames its tasks produce wait in its Pending for
// at most this many tasks: the busier the server, the more each client's wake-up carries.
constexpr int kMaxDeferredTasks = 8;

// What one worker (or the I/O thread running that worker's batch in its place) has handled
// but not handed to the transport yet. Only ever touched by whoever runs the worker's tasks.
struct WorkerState {
  ChatServer::Pending pending;
  int deferred_tasks = 0;
};

// Runs a worker's events in order; runs of frames go to ChatServer as batches, so each member
// is woken once per batch rather than once per message. Their frames wait in `state` for
// hand_over().
void dispatch_all(ChatServer& chat, std::vector<transport::ServerEvent>& events,
                  WorkerState& state) {
  std::vector<ChatServer::Received> run;
  const auto flush_run = [&] {
    if (!run.empty()) chat.received(run, state.pending);
    run.clear();
  };
  for (auto& ev : events) {
    if (ev.kind == transport::ServerEvent::Kind::kFrame) {
      run.push_back({ev.client, ev.frame});
      if (run.size() == kFramesPerBatch) flush_run();
      continue;
    }
    flush_run();
    dispatch(chat, ev);
  }
  flush_run();
}

// After a worker's task: hands what it produced to the transport, unless the worker has more
// tasks queued (`more_queued`, so another call is sure to follow) and it has not put this off
// too often in a row: then each member is woken once for several batches.
void hand_over(ChatServer& chat, WorkerState& state, bool more_queued) {
  if (more_queued && ++state.deferred_tasks < kMaxDeferredTasks) return;
  state.deferred_tasks = 0;
  chat.deliver(state.pending);
}

void dispatch(ChatServer& chat, transport::ServerEvent& ev) {
  using Kind = transport::ServerEvent::Kind;
  switch (ev.kind) {
    case Kind::kConnected:
      chat.connected(ev.client, ev.pid);
      break;
    case Kind::kFrame:
      chat.received(ev.client, ev.frame);
      break;
    case Kind::kWritable:
      chat.writable(ev.client);
      break;
    case Kind::kDisconnected:
      chat.disconnected(ev.client, ev.gone, ev.detail);
      break;
  }
}

// Removes whatever a dead server of this instance left: every backend's objects (the dead
// server may have used another transport) and every file in the directory.
std::vector<std::string> remove_leftovers(const InstanceDir& dir) {
  transport::CleanupOptions co;
  co.dir = dir.path();
  if (const auto stale = dir.stale_info()) {
    co.dead_server_pid = stale->pid;
    co.objects = stale->objects;
  }
  std::vector<std::string> removed;
  for (const auto& backend : transport::backends()) {
    for (auto& line : backend.cleanup(co)) removed.push_back(std::move(line));
  }
  for (auto& file : dir.remove_contents()) removed.push_back(std::move(file));
  return removed;
}

// Blocks SIGINT and SIGTERM and returns a signalfd for them.
UniqueFd termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throw_system_error("pthread_sigmask", "");
  UniqueFd fd(::signalfd(-1, &set, SFD_CLOEXEC));
  if (!fd) throw_system_error("signalfd", "SIGINT/SIGTERM");
  return fd;
}

InstanceDir acquire(const DaemonOptions& o) {
  return InstanceDir::acquire(resolve_runtime_base(o.runtime_dir), o.instance);
}

}  // namespace

int run_daemon(const DaemonOptions& o, const Logger& logger) {
  UniqueFd signals = termination_signals();
  transport::prepare_process();
  const transport::Backend* backend = transport::find_backend(o.transport);
  if (backend == nullptr) {
    logger.error("unknown transport '" + o.transport + "'");
    return kExitUsage;
  }
  std::optional<InstanceDir> dir;
  try {
    dir.emplace(acquire(o));
  } catch (const InstanceBusy& e) {
    logger.error(e.what());
    return kExitBusy;
  }
  for (const auto& line : remove_leftovers(*dir)) {
    logger.info("removed leftover of a dead server: " + line);
  }

  transport::ListenOptions lo;
  lo.dir = dir->path();
  lo.instance = o.instance;
  lo.max_clients = o.max_clients;
  lo.logger = &logger;
  std::unique_ptr<transport::ServerEndpoint> endpoint;
  std::optional<StatusListener> status;
  try {
    endpoint = backend->listen(lo);
    status.emplace(dir->path());
    InstanceInfo info;
    info.instance = o.instance;
    info.transport = o.transport;
    info.pid = ::getpid();
    info.protocol = protocol::kVersion;
    info.objects = endpoint->objects();
    dir->publish(info);
  } catch (...) {
    status.reset();
    endpoint.reset();
    remove_leftovers(*dir);
    dir->remove();
    throw;
  }
  service::notify_ready("serving instance '" + o.instance + "' over " + o.transport);

  EndpointLink link(*endpoint);
  ChatServer chat(link, logger, {o.max_clients, o.history, o.client_queue_bytes});
  // One per worker; declared before the pool, whose remaining tasks may use them as it stops.
  std::vector<WorkerState> workers(o.workers);
  ThreadPool pool(o.workers, kTasksPerWorker);
  const UniqueFd io_failed = make_eventfd("chatd");
  std::atomic<bool> stop{false};
  std::thread io([&] {
    std::vector<transport::ServerEvent> events;
    std::vector<std::vector<transport::ServerEvent>> batches(pool.size());
    // A failure here (out of descriptors while accepting, say) is logged and retried; only
    // a failure that persists ends the server.
    int failures = 0;
    while (!stop.load(std::memory_order_acquire)) {
      try {
        events.clear();
        endpoint->poll(events, deadline_after(std::chrono::seconds(1)));
        for (auto& ev : events) batches[ev.client % pool.size()].push_back(std::move(ev));
        for (std::size_t w = 0; w < batches.size(); ++w) {
          if (batches[w].empty()) continue;
          if (batches[w].size() <= kInlineEvents) {
            // Moved out first: should it throw, the batch is not dispatched a second time.
            auto batch = std::move(batches[w]);
            batches[w].clear();
            const auto run_here = [&] {
              dispatch_all(chat, batch, workers[w]);
              hand_over(chat, workers[w], false);
            };
            if (pool.run_here_if_idle(w, run_here)) continue;
            batches[w] = std::move(batch);
          }
          pool.submit(
              w, [&chat, &pool, &state = workers[w], w, batch = std::move(batches[w])]() mutable {
                dispatch_all(chat, batch, state);
                hand_over(chat, state, pool.queued(w) > 0);
              });
          batches[w].clear();
        }
        failures = 0;
      } catch (const std::exception& e) {
        logger.error(std::string("I/O thread: ") + e.what());
        if (++failures == kMaxIoFailures) {
          logger.error("I/O thread keeps failing; giving up");
          signal_eventfd(io_failed.get());
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  });

  logger.info("serving instance '" + o.instance + "' over " + o.transport + " in " +
              dir->path().string() + " with " + std::to_string(o.workers) + " workers (pid " +
              std::to_string(::getpid()) + ")");
  int code = kExitOk;
  DaemonFacts facts;
  facts.instance = o.instance;
  facts.transport = o.transport;
  facts.pid = ::getpid();
  facts.started = Clock::now();
  facts.workers = o.workers;
  facts.max_clients = o.max_clients;
  facts.history = o.history;
  facts.client_queue_bytes = o.client_queue_bytes;
  // The main thread waits for a termination signal or a failed I/O thread, and answers
  // `chatd --status` meanwhile.
  pollfd fds[3] = {
      {signals.get(), POLLIN, 0}, {io_failed.get(), POLLIN, 0}, {status->fd(), POLLIN, 0}};
  for (;;) {
    if (retry_eintr([&] { return ::poll(fds, 3, -1); }) <= 0) continue;
    if ((fds[0].revents | fds[1].revents) & POLLIN) break;
    if (fds[2].revents & POLLIN) {
      facts.pending_tasks = pool.pending();
      status->serve(status_document(facts, chat.stats())
                        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                    "\n");
    }
  }
  if (fds[0].revents & POLLIN) {
    signalfd_siginfo si{};
    [[maybe_unused]] ssize_t n = ::read(signals.get(), &si, sizeof si);
    logger.info(std::string("received ") + (si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM") +
                ", shutting down");
  } else {
    code = kExitFailure;
  }
  stop.store(true, std::memory_order_release);
  endpoint->wake();
  io.join();
  pool.stop();
  chat.shutdown();
  service::notify_stopping("shutting down");
  status.reset();
  endpoint.reset();  // removes the transport's objects
  dir->remove();
  logger.info("shut down cleanly");
  return code;
}

int run_cleanup(const DaemonOptions& o, const Logger& logger) {
  const auto base = resolve_runtime_base(o.runtime_dir);
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(base / o.instance, ec))) {
    std::printf("nothing to clean up: %s does not exist\n", (base / o.instance).c_str());
    return kExitOk;
  }
  std::optional<InstanceDir> dir;
  try {
    dir.emplace(acquire(o));
  } catch (const InstanceBusy& e) {
    logger.error(std::string(e.what()) + "; not cleaning up a live instance");
    return kExitBusy;
  }
  const auto removed = remove_leftovers(*dir);
  for (const auto& line : removed) std::printf("removed %s\n", line.c_str());
  dir->remove();
  std::printf("removed %s\n", dir->path().c_str());
  return kExitOk;
}

}  // namespace chat::server

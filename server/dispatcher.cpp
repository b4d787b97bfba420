#include "server/dispatcher.hpp"

#include <chrono>
#include <exception>
#include <string>
#include <utility>

#include "common/event_fd.hpp"
#include "common/time.hpp"

namespace chat::server {
namespace {

constexpr int kMaxIoFailures = 100;  // in a row, 10 ms apart

}  // namespace

Dispatcher::Dispatcher(transport::ServerEndpoint& endpoint, ChatServer& chat, std::size_t workers,
                       const Logger& logger)
    : endpoint_(endpoint),
      chat_(chat),
      logger_(logger),
      workers_(workers),
      pool_(workers, kTasksPerWorker),
      failed_(make_eventfd("chatd")),
      io_([this] { io_loop(); }) {}

Dispatcher::~Dispatcher() {
  stop();
}

void Dispatcher::stop() {
  if (!io_.joinable()) return;  // stopped already; the endpoint may be gone by now
  stop_.store(true, std::memory_order_release);
  endpoint_.wake();
  io_.join();
  pool_.stop();
}

void Dispatcher::io_loop() {
  Events events;
  std::vector<Events> by_worker(pool_.size());
  // A failure here (out of descriptors while accepting, say) is logged and retried; only a
  // failure that persists ends the server.
  int failures = 0;
  while (!stop_.load(std::memory_order_acquire)) {
    try {
      events.clear();
      endpoint_.poll(events, deadline_after(std::chrono::seconds(1)));
      distribute(events, by_worker);
      failures = 0;
    } catch (const std::exception& e) {
      logger_.error(std::string("I/O thread: ") + e.what());
      if (++failures == kMaxIoFailures) {
        logger_.error("I/O thread keeps failing; giving up");
        signal_eventfd(failed_.get());
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

void Dispatcher::distribute(Events& events, std::vector<Events>& by_worker) {
  for (auto& ev : events) by_worker[ev.client % by_worker.size()].push_back(std::move(ev));
  for (std::size_t w = 0; w < by_worker.size(); ++w) {
    // Moved out first: should handing over throw, the events are not dispatched a second time.
    if (!by_worker[w].empty()) hand_to_worker(w, std::exchange(by_worker[w], {}));
  }
}

void Dispatcher::hand_to_worker(std::size_t w, Events events) {
  if (events.size() <= kInlineEvents &&
      pool_.run_here_if_idle(w, [&] { run_task(w, events, false); })) {
    return;
  }
  pool_.submit(w, [this, w, events = std::move(events)]() mutable { run_task(w, events, true); });
}

void Dispatcher::run_task(std::size_t w, Events& events, bool on_worker) {
  WorkerState& state = workers_[w];
  dispatch_all(events, state);
  // On the I/O thread nothing is queued behind the task: it runs there only when the worker's
  // queue is empty, and only the I/O thread submits.
  hand_over(state, on_worker && pool_.queued(w) > 0);
}

// Runs of frames go to ChatServer as batches, so each member is woken once per batch rather
// than once per message. Their frames wait in `state` for hand_over().
void Dispatcher::dispatch_all(Events& events, WorkerState& state) {
  std::vector<ChatServer::Received> run;
  const auto flush_run = [&] {
    if (!run.empty()) chat_.received(run, state.pending);
    run.clear();
  };
  for (auto& ev : events) {
    if (ev.kind == transport::ServerEvent::Kind::kFrame) {
      run.push_back({ev.client, ev.frame});
      if (run.size() == kFramesPerBatch) flush_run();
      continue;
    }
    flush_run();
    dispatch(ev);
  }
  flush_run();
}

void Dispatcher::dispatch(transport::ServerEvent& ev) {
  using Kind = transport::ServerEvent::Kind;
  switch (ev.kind) {
    case Kind::kConnected:
      chat_.connected(ev.client, ev.pid, ev.uid);
      break;
    case Kind::kFrame:
      chat_.received(ev.client, ev.frame);
      break;
    case Kind::kWritable:
      chat_.writable(ev.client);
      break;
    case Kind::kDisconnected:
      chat_.disconnected(ev.client, ev.gone, ev.detail);
      break;
  }
}

// Hands what the worker produced to the transport, unless the worker has more tasks queued
// (`more_queued`, so another call is sure to follow) and it has not put this off too often in
// a row: then each member is woken once for several batches.
void Dispatcher::hand_over(WorkerState& state, bool more_queued) {
  if (more_queued && ++state.deferred_tasks < kMaxDeferredTasks) return;
  state.deferred_tasks = 0;
  chat_.deliver(state.pending);
}

}  // namespace chat::server

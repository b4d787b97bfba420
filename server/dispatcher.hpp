// Dispatcher: chatd's path from the transport to the chat logic and back, and every batching
// decision on that path.
//
// How a frame travels, and why it is batched the way it is:
//
//  1. The I/O thread, the one thread that calls ServerEndpoint::poll(), takes whatever the
//     endpoint reports and sorts it by worker: client % workers. All events of one client go
//     to one worker, which runs its tasks one at a time in the order given, so ChatServer
//     sees a client's events in the order the transport reported them (its one threading
//     rule); different clients spread over the workers.
//  2. One poll's events for one worker become one task. If there are at most kInlineEvents of
//     them and the worker is idle with nothing queued, the I/O thread runs the task itself
//     (ThreadPool::run_here_if_idle, built on BlockingQueue::try_claim, which holds the
//     worker off meanwhile so the order is kept): waking an idle worker is the largest part
//     of a round trip through an idle server. Otherwise the task is queued for the worker.
//     A worker queues at most kTasksPerWorker tasks; then the I/O thread waits for room
//     (backpressure on the transport instead of dropping events).
//  3. A task hands runs of up to kFramesPerBatch consecutive frames to ChatServer as one
//     batch: the state lock is taken once per run, and what each client is to receive piles
//     up in the worker's ChatServer::Pending instead of going out message by message. Other
//     events (connected, writable, disconnected) go one by one, in their place. The cap
//     bounds how long the first message of a run waits for the deliveries of the last.
//  4. After the task, ChatServer::deliver() sends each client its pile through
//     Link::send_batch, which is ServerEndpoint::send_batch in chatd, kFramesPerSend frames a
//     call: one wake-up of the client per call, not per frame. A worker with more tasks
//     queued puts this off for up to kMaxDeferredTasks tasks in a row, so the busier the
//     server, the more each wake-up carries; the cap keeps the wait bounded.
//
// What the batching saves is wake-ups of threads and client processes: each one costs more
// than handling a frame does (tens of microseconds on the benchmark VM: bench/results/).
#pragma once

#include <atomic>
#include <cstddef>
#include <span>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "server/chat_server.hpp"
#include "server/thread_pool.hpp"
#include "transport/transport.hpp"

namespace chat::server {

// A poll's events for an idle worker, at most this many, run on the I/O thread itself.
inline constexpr std::size_t kInlineEvents = 4;
// Tasks (each one poll's events for the worker, not single frames) a worker queues at most.
inline constexpr std::size_t kTasksPerWorker = 256;
// Consecutive frames handed to ChatServer as one batch at most.
inline constexpr std::size_t kFramesPerBatch = 32;
// Tasks in a row a busy worker keeps its deliveries back for, at most.
inline constexpr int kMaxDeferredTasks = 8;
// Frames per Link::send_batch call at most (ChatServer::deliver and every other flush).
inline constexpr std::size_t kFramesPerSend = 64;

// ChatServer's Link over a transport endpoint: how its frames leave chatd (step 4 above).
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

// Owns the I/O thread and the worker pool. Its own calls come from one thread (chatd's main).
class Dispatcher {
 public:
  // Starts `workers` worker threads and the I/O thread, which polls `endpoint` until stop().
  Dispatcher(transport::ServerEndpoint& endpoint, ChatServer& chat, std::size_t workers,
             const Logger& logger);
  ~Dispatcher();  // stop()
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Readable (POLLIN) once the I/O thread has given up: its failures persisted.
  int failed_fd() const { return failed_.get(); }
  // Tasks waiting for a worker, over all workers (for status reports).
  std::size_t pending_tasks() const { return pool_.pending(); }

  // Ends the I/O thread, runs every task already queued and joins the workers; afterwards
  // nothing calls ChatServer or the endpoint any more. Idempotent. Call it before the
  // endpoint is destroyed.
  void stop();

 private:
  // What one worker (or the I/O thread running that worker's task in its place) has handled
  // but not handed to the transport yet. Only ever touched by whoever runs the worker's tasks.
  struct WorkerState {
    ChatServer::Pending pending;
    int deferred_tasks = 0;
  };
  using Events = std::vector<transport::ServerEvent>;

  void io_loop();
  // Sorts one poll's events by worker and hands each worker its share.
  void distribute(Events& events, std::vector<Events>& by_worker);
  // Runs `events` on the I/O thread if worker `w` is idle and there are few, else queues them.
  void hand_to_worker(std::size_t w, Events events);
  // One task: `events` in order, then hand_over().
  void run_task(std::size_t w, Events& events, bool on_worker);
  void dispatch_all(Events& events, WorkerState& state);
  void dispatch(transport::ServerEvent& ev);
  void hand_over(WorkerState& state, bool more_queued);

  transport::ServerEndpoint& endpoint_;
  ChatServer& chat_;
  const Logger& logger_;
  // One per worker; declared before the pool, whose remaining tasks may use them as it stops.
  std::vector<WorkerState> workers_;
  ThreadPool pool_;
  const UniqueFd failed_;
  std::atomic<bool> stop_{false};
  std::thread io_;  // last: it starts once everything it uses exists
};

}  // namespace chat::server

// ThreadPool: worker threads fed through bounded queues.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "server/blocking_queue.hpp"

namespace chat::server {

// Each worker owns one bounded queue. A task is submitted with a key; tasks with equal keys go
// to the same worker, so they run one at a time and in submission order (chatd keys by client,
// which keeps each sender's messages in the order it sent them: server/dispatcher.hpp).
//
// submit() is thread-safe and blocks while the chosen worker's queue is full (backpressure).
class ThreadPool {
 public:
  ThreadPool(std::size_t workers, std::size_t queue_capacity);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Returns false if the pool is stopped (the task is dropped).
  bool submit(std::uint64_t key, std::function<void()> task);

  // Runs `task` in the calling thread if the worker for `key` is idle with nothing queued,
  // which saves waking it; tasks with that key still run one at a time and in order. Returns
  // false, running nothing, if the worker is busy (then submit() it).
  template <typename F>
  bool run_here_if_idle(std::uint64_t key, F&& task) {
    auto& q = *queues_[key % queues_.size()];
    if (!q.try_claim()) return false;
    struct Release {
      BlockingQueue<std::function<void()>>& q;
      ~Release() { q.release_claim(); }
    } release{q};
    task();
    return true;
  }

  // Runs every task already submitted, then joins the workers. Idempotent.
  void stop();

  std::size_t size() const { return queues_.size(); }
  // Tasks waiting for the worker of `key` (not counting one it is running).
  std::size_t queued(std::uint64_t key) const { return queues_[key % queues_.size()]->size(); }
  // Tasks waiting, over all workers (for status reports).
  std::size_t pending() const;

 private:
  std::vector<std::unique_ptr<BlockingQueue<std::function<void()>>>> queues_;
  std::vector<std::thread> threads_;
};

}  // namespace chat::server

#include "server/thread_pool.hpp"

#include <stdexcept>

namespace chat::server {

ThreadPool::ThreadPool(std::size_t workers, std::size_t queue_capacity) {
  if (workers == 0) throw std::invalid_argument("ThreadPool needs at least one worker");
  for (std::size_t i = 0; i < workers; ++i) {
    queues_.push_back(std::make_unique<BlockingQueue<std::function<void()>>>(queue_capacity));
  }
  for (std::size_t i = 0; i < workers; ++i) {
    threads_.emplace_back([q = queues_[i].get()] {
      while (auto task = q->take()) (*task)();
    });
  }
}

ThreadPool::~ThreadPool() {
  stop();
}

bool ThreadPool::submit(std::uint64_t key, std::function<void()> task) {
  return queues_[key % queues_.size()]->put(std::move(task));
}

void ThreadPool::stop() {
  for (auto& q : queues_) q->close();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

std::size_t ThreadPool::pending() const {
  std::size_t n = 0;
  for (const auto& q : queues_) n += q->size();
  return n;
}

}  // namespace chat::server

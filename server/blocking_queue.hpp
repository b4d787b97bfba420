// BlockingQueue: a bounded FIFO for handing work between threads.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>

namespace chat::server {

// Thread-safe. put() blocks while the queue holds `capacity` items; take() blocks while it is
// empty. After close(), put() drops items and take() returns what is left, then nullopt.
template <typename T>
class BlockingQueue {
 public:
  explicit BlockingQueue(std::size_t capacity) : capacity_(capacity) {}
  BlockingQueue(const BlockingQueue&) = delete;
  BlockingQueue& operator=(const BlockingQueue&) = delete;

  // Returns false (and drops `item`) if the queue is closed.
  bool put(T item) {
    std::unique_lock lock(mutex_);
    while (items_.size() >= capacity_ && !closed_) not_full_.wait(lock);
    if (closed_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }

  std::optional<T> take() {
    std::unique_lock lock(mutex_);
    while (items_.empty() && !closed_) not_empty_.wait(lock);
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }

  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return items_.size();
  }

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> items_;
  bool closed_ = false;
};

}  // namespace chat::server

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

  // For one consumer: calling it again also says the previous item is done with.
  std::optional<T> take() {
    std::unique_lock lock(mutex_);
    busy_ = false;
    while (claimed_ || (items_.empty() && !closed_)) not_empty_.wait(lock);
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    busy_ = true;
    not_full_.notify_one();
    return item;
  }

  // True if nothing is queued and the consumer waits in take() with nothing in hand: then the
  // caller may do the work itself, and take() hands out nothing until release_claim(), so the
  // order of the work is kept. False (nothing claimed) otherwise, or once closed.
  bool try_claim() {
    std::lock_guard lock(mutex_);
    if (closed_ || busy_ || claimed_ || !items_.empty()) return false;
    claimed_ = true;
    return true;
  }

  void release_claim() {
    std::lock_guard lock(mutex_);
    claimed_ = false;
    // Wake the consumer only for items put meanwhile: a wake-up with nothing to do would cost
    // about what the claim saved.
    if (!items_.empty() || closed_) not_empty_.notify_all();
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
  bool busy_ = false;     // the consumer holds an item from take()
  bool claimed_ = false;  // try_claim(): a producer does the consumer's work right now
};

}  // namespace chat::server

// A process-shared robust mutex and condition variable living in shared memory.
//
// Boost.Interprocess's interprocess_mutex never calls pthread_mutex_consistent, so a lock
// whose owner died stays unusable; this wrapper recovers it. The memory is untrusted (another
// process can scribble on it), so every wait takes a deadline and failures are return values.
#pragma once

#include <pthread.h>

#include "common/time.hpp"

namespace chat::transport::shm {

enum class LockResult {
  kLocked,     // we own the mutex
  kRecovered,  // we own it; its previous owner died holding it, and the protected state may
               // be half-updated: the caller repairs or discards it
  kTimedOut,   // not acquired before the deadline
  kBroken,     // not acquired: the mutex is unusable (corrupted or not recoverable)
};

// Placed inside shared memory; has no constructor because the bytes are shared. init() once
// by the creator before any other process maps the memory.
struct RobustMutex {
  pthread_mutex_t native;

  void init();
  LockResult lock(Deadline deadline);
  void unlock();
};

// A process-shared condition variable on CLOCK_MONOTONIC, used with a RobustMutex.
struct SharedCondvar {
  pthread_cond_t native;

  void init();
  // Waits with `m` locked; returns with it locked again (kRecovered if its owner died
  // meanwhile), or kTimedOut at the deadline (still locked), or kBroken.
  LockResult wait(RobustMutex& m, Deadline deadline);
  void signal();
  void broadcast();
};

// Locks for a scope; owns_lock() is false if the lock could not be taken.
class RobustLock {
 public:
  RobustLock(RobustMutex& m, Deadline deadline) : m_(m), result_(m.lock(deadline)) {}
  ~RobustLock() {
    if (owns_lock()) m_.unlock();
  }
  RobustLock(const RobustLock&) = delete;
  RobustLock& operator=(const RobustLock&) = delete;
  bool owns_lock() const {
    return result_ == LockResult::kLocked || result_ == LockResult::kRecovered;
  }
  LockResult result() const { return result_; }

 private:
  RobustMutex& m_;
  LockResult result_;
};

}  // namespace chat::transport::shm

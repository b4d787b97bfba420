#include "transport/shm/robust_mutex.hpp"

#include <cerrno>
#include <chrono>

#include "common/error.hpp"

namespace chat::transport::shm {
namespace {

LockResult after_lock(pthread_mutex_t* m, int rc) {
  switch (rc) {
    case 0:
      return LockResult::kLocked;
    case EOWNERDEAD:
      // The owner died inside its critical section. Mark the mutex usable again; the caller
      // decides what to do about the state it protects.
      if (pthread_mutex_consistent(m) != 0) {
        pthread_mutex_unlock(m);
        return LockResult::kBroken;
      }
      return LockResult::kRecovered;
    case ETIMEDOUT:
      return LockResult::kTimedOut;
    default:
      return LockResult::kBroken;
  }
}

}  // namespace

void RobustMutex::init() {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  const int rc = pthread_mutex_init(&native, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) throw_system_error("pthread_mutex_init", "robust shared mutex", rc);
}

LockResult RobustMutex::lock(Deadline deadline) {
  if (deadline == kNoDeadline) return after_lock(&native, pthread_mutex_lock(&native));
#if defined(__SANITIZE_THREAD__)
  // GCC 12's ThreadSanitizer does not intercept pthread_mutex_clocklock, and its timedlock
  // interceptor ignores EOWNERDEAD; its trylock interceptor handles both. Sanitizer builds
  // only: poll it until the deadline.
  for (;;) {
    const int rc = pthread_mutex_trylock(&native);
    if (rc != EBUSY) return after_lock(&native, rc);
    if (Clock::now() >= deadline) return LockResult::kTimedOut;
    const timespec pause{0, 50'000};
    ::nanosleep(&pause, nullptr);
  }
#else
  const timespec ts = to_monotonic_timespec(deadline);
  return after_lock(&native, pthread_mutex_clocklock(&native, CLOCK_MONOTONIC, &ts));
#endif
}

void RobustMutex::unlock() {
  pthread_mutex_unlock(&native);
}

void SharedCondvar::init() {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  const int rc = pthread_cond_init(&native, &attr);
  pthread_condattr_destroy(&attr);
  if (rc != 0) throw_system_error("pthread_cond_init", "shared condvar", rc);
}

LockResult SharedCondvar::wait(RobustMutex& m, Deadline deadline) {
  int rc;
  if (deadline == kNoDeadline) {
    rc = pthread_cond_wait(&native, &m.native);
  } else {
    // init() gave the condvar CLOCK_MONOTONIC, so timedwait takes a monotonic deadline.
    const timespec ts = to_monotonic_timespec(deadline);
    rc = pthread_cond_timedwait(&native, &m.native, &ts);
  }
  return after_lock(&m.native, rc);
}

void SharedCondvar::signal() {
  pthread_cond_signal(&native);
}
void SharedCondvar::broadcast() {
  pthread_cond_broadcast(&native);
}

}  // namespace chat::transport::shm

// BlockingQueue and ThreadPool (server/blocking_queue.hpp, server/thread_pool.hpp).
#include "server/thread_pool.hpp"

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <future>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "server/blocking_queue.hpp"
#include "tests/support/support.hpp"

namespace chat::server {
namespace {

using namespace std::chrono_literals;

// How long a test waits for something that should happen promptly before calling it a hang.
constexpr auto kPatience = 10s;

// Waits until every other thread of the test has gone as far as it can and sleeps in the
// kernel (a condition variable wait, or a future's): the positive event after which "it has
// not happened" means "it will not happen by itself". A thread that should block but does not
// runs to its end instead, and what the test checks next shows it.
void let_it_block() {
  BOOST_REQUIRE_MESSAGE(chat::test::wait_others_sleeping(kPatience),
                        "the other threads did not settle: one keeps running");
}

// Runs `f` on a detached thread. Unlike std::async's, the future does not wait for `f` when
// destroyed, so a test whose `f` never returns fails instead of hanging; whatever `f` uses must
// therefore be shared (see Queue) rather than live on the test's stack.
template <typename F>
auto run_detached(F f) -> std::future<decltype(f())> {
  std::packaged_task<decltype(f())()> task(std::move(f));
  auto result = task.get_future();
  std::thread(std::move(task)).detach();
  return result;
}

using Queue = std::shared_ptr<BlockingQueue<int>>;
Queue make_queue(std::size_t capacity) {
  return std::make_shared<BlockingQueue<int>>(capacity);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(blocking_queue)

BOOST_AUTO_TEST_CASE(fifo_order) {
  BlockingQueue<int> q(8);
  for (int i = 0; i < 8; ++i) BOOST_TEST(q.put(i));
  BOOST_TEST(q.size() == 8u);
  for (int i = 0; i < 8; ++i) BOOST_TEST(*q.take() == i);
  BOOST_TEST(q.size() == 0u);
}

BOOST_AUTO_TEST_CASE(put_blocks_while_full_until_a_take) {
  const Queue q = make_queue(2);
  q->put(1);
  q->put(2);
  auto put = run_detached([q] { return q->put(3); });
  let_it_block();
  BOOST_TEST((put.wait_for(0s) == std::future_status::timeout));
  BOOST_TEST(q->size() == 2u);
  BOOST_TEST(*q->take() == 1);
  // The take made room: the put completes.
  BOOST_TEST_REQUIRE((put.wait_for(kPatience) == std::future_status::ready));
  BOOST_TEST(put.get());
  BOOST_TEST(*q->take() == 2);
  BOOST_TEST(*q->take() == 3);
}

BOOST_AUTO_TEST_CASE(take_blocks_while_empty_until_a_put) {
  const Queue q = make_queue(2);
  auto taken = run_detached([q] { return q->take(); });
  let_it_block();
  BOOST_TEST((taken.wait_for(0s) == std::future_status::timeout));
  q->put(7);
  BOOST_TEST_REQUIRE((taken.wait_for(kPatience) == std::future_status::ready));
  BOOST_TEST(*taken.get() == 7);
}

BOOST_AUTO_TEST_CASE(close_wakes_blocked_takers) {
  const Queue q = make_queue(2);
  std::vector<std::future<std::optional<int>>> takers;
  for (int i = 0; i < 3; ++i) takers.push_back(run_detached([q] { return q->take(); }));
  let_it_block();
  q->close();
  for (auto& t : takers) {
    BOOST_TEST_REQUIRE((t.wait_for(kPatience) == std::future_status::ready));
    BOOST_TEST(!t.get().has_value());
  }
}

BOOST_AUTO_TEST_CASE(close_wakes_blocked_putters_and_keeps_what_was_queued) {
  const Queue q = make_queue(1);
  q->put(1);
  std::vector<std::future<bool>> putters;
  for (int i = 0; i < 3; ++i) putters.push_back(run_detached([q, i] { return q->put(10 + i); }));
  let_it_block();
  q->close();
  for (auto& p : putters) {
    BOOST_TEST_REQUIRE((p.wait_for(kPatience) == std::future_status::ready));
    BOOST_TEST(!p.get());  // dropped
  }
  BOOST_TEST(!q->put(99));
  BOOST_TEST(*q->take() == 1);  // what was queued before close is still handed out
  BOOST_TEST(!q->take().has_value());
}

BOOST_AUTO_TEST_CASE(many_producers_lose_nothing) {
  const Queue q = make_queue(4);
  constexpr int kProducers = 3, kPerProducer = 5000;
  struct Tally {
    long long sum = 0;
    int count = 0;
  };
  std::vector<std::future<Tally>> consumers;
  for (int c = 0; c < 1; ++c) {  // take() is made for one consumer (see try_claim)
    consumers.push_back(run_detached([q] {
      Tally t;
      while (auto v = q->take()) t.sum += *v, ++t.count;
      return t;
    }));
  }
  std::vector<std::future<void>> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.push_back(run_detached([q] {
      for (int i = 1; i <= kPerProducer; ++i) q->put(i);
    }));
  }
  for (auto& p : producers) {
    BOOST_TEST_REQUIRE((p.wait_for(kPatience) == std::future_status::ready));
  }
  q->close();
  Tally total;
  for (auto& c : consumers) {
    BOOST_TEST_REQUIRE((c.wait_for(kPatience) == std::future_status::ready));
    const Tally t = c.get();
    total.sum += t.sum, total.count += t.count;
  }
  BOOST_TEST(total.count == kProducers * kPerProducer);
  BOOST_TEST(total.sum == 1LL * kProducers * kPerProducer * (kPerProducer + 1) / 2);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(thread_pool)

BOOST_AUTO_TEST_CASE(needs_a_worker) {
  BOOST_CHECK_THROW(ThreadPool(0, 4), std::invalid_argument);
  ThreadPool pool(3, 4);
  BOOST_TEST(pool.size() == 3u);
}

BOOST_AUTO_TEST_CASE(same_key_runs_in_order_and_never_concurrently) {
  constexpr int kKeys = 7, kTasksPerKey = 400;  // 7 keys over 4 workers: no accidental pattern
  ThreadPool pool(4, 16);
  std::mutex mutex;
  std::map<int, std::vector<int>> order;
  std::map<int, std::set<std::thread::id>> threads;
  std::atomic<int> in_flight[kKeys] = {};
  std::atomic<int> overlaps{0};
  for (int i = 0; i < kTasksPerKey; ++i) {
    for (int k = 0; k < kKeys; ++k) {
      pool.submit(static_cast<std::uint64_t>(k), [&, k, i] {
        if (in_flight[k].fetch_add(1) != 0) ++overlaps;
        {
          std::lock_guard lock(mutex);
          order[k].push_back(i);
          threads[k].insert(std::this_thread::get_id());
        }
        if (i % 50 == 0) std::this_thread::yield();  // widen the window for an overlap
        in_flight[k].fetch_sub(1);
      });
    }
  }
  pool.stop();
  BOOST_TEST(overlaps.load() == 0);
  for (int k = 0; k < kKeys; ++k) {
    BOOST_TEST_REQUIRE(order[k].size() == static_cast<std::size_t>(kTasksPerKey));
    for (int i = 0; i < kTasksPerKey; ++i) {
      if (order[k][i] != i) {
        BOOST_ERROR("key " << k << ": task " << order[k][i] << " ran at position " << i);
        break;
      }
    }
    BOOST_TEST(threads[k].size() == 1u);
  }
}

BOOST_AUTO_TEST_CASE(different_keys_run_on_different_workers_at_once) {
  // Four tasks that each wait until all four are running: only possible if the four keys
  // went to four different workers.
  constexpr int kWorkers = 4;
  ThreadPool pool(kWorkers, 4);
  std::latch all_running(kWorkers);
  std::atomic<int> met{0};
  std::mutex mutex;
  std::set<std::thread::id> ids;
  for (int k = 0; k < kWorkers; ++k) {
    pool.submit(static_cast<std::uint64_t>(k), [&] {
      {
        std::lock_guard lock(mutex);
        ids.insert(std::this_thread::get_id());
      }
      all_running.count_down();
      const auto end = std::chrono::steady_clock::now() + kPatience;
      while (!all_running.try_wait() && std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(1ms);
      }
      if (all_running.try_wait()) ++met;
    });
  }
  pool.stop();
  BOOST_TEST(met.load() == kWorkers);
  BOOST_TEST(ids.size() == static_cast<std::size_t>(kWorkers));
}

BOOST_AUTO_TEST_CASE(submit_blocks_when_the_workers_queue_is_full) {
  ThreadPool pool(1, 2);
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  std::atomic<int> ran{0};
  std::latch first_running(1);
  pool.submit(0, [&] {
    first_running.count_down();
    open.wait();
    ++ran;
  });
  first_running.wait();  // the worker holds task 1; the queue is empty
  pool.submit(0, [&] { ++ran; });
  pool.submit(0, [&] { ++ran; });
  BOOST_TEST(pool.pending() == 2u);
  std::atomic<bool> submitted{false};
  std::thread t([&] {
    pool.submit(0, [&] { ++ran; });
    submitted = true;
  });
  let_it_block();
  BOOST_TEST(!submitted.load());
  gate.set_value();
  t.join();
  BOOST_TEST(submitted.load());
  pool.stop();
  BOOST_TEST(ran.load() == 4);
}

BOOST_AUTO_TEST_CASE(stop_runs_what_was_already_submitted) {
  ThreadPool pool(2, 1000);
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  std::atomic<int> ran{0};
  // Hold both workers so the queues fill up before stop().
  for (std::uint64_t k = 0; k < 2; ++k) pool.submit(k, [open] { open.wait(); });
  for (int i = 0; i < 500; ++i) pool.submit(static_cast<std::uint64_t>(i), [&] { ++ran; });
  BOOST_TEST(pool.pending() >= 498u);
  std::thread stopper([&] { pool.stop(); });
  let_it_block();
  gate.set_value();
  stopper.join();
  BOOST_TEST(ran.load() == 500);
  BOOST_TEST(pool.pending() == 0u);
  BOOST_TEST(!pool.submit(0, [&] { ++ran; }));  // stopped: dropped
  pool.stop();                                  // idempotent
  BOOST_TEST(ran.load() == 500);
}

BOOST_AUTO_TEST_CASE(idle_worker_lets_the_caller_run_the_task) {
  ThreadPool pool(2, 4);
  std::thread::id ran_on;
  BOOST_TEST(pool.run_here_if_idle(0, [&] { ran_on = std::this_thread::get_id(); }));
  BOOST_TEST((ran_on == std::this_thread::get_id()));
  pool.stop();
  bool ran = false;
  BOOST_TEST(!pool.run_here_if_idle(0, [&] { ran = true; }));  // stopped
  BOOST_TEST(!ran);
}

BOOST_AUTO_TEST_CASE(busy_worker_declines_and_becomes_idle_again) {
  ThreadPool pool(2, 4);
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  std::latch running(1);
  pool.submit(0, [&running, open] {
    running.count_down();
    open.wait();
  });
  running.wait();
  bool ran = false;
  BOOST_TEST(!pool.run_here_if_idle(0, [&] { ran = true; }));
  BOOST_TEST(!ran);
  BOOST_TEST(pool.run_here_if_idle(1, [&] { ran = true; }));  // the other worker is idle
  BOOST_TEST(ran);
  gate.set_value();
  // Once the task is done the worker takes the next one or waits: idle again.
  bool again = false;
  const auto end = std::chrono::steady_clock::now() + kPatience;
  while (!again && std::chrono::steady_clock::now() < end) {
    again = pool.run_here_if_idle(0, [] {});
    if (!again) std::this_thread::sleep_for(1ms);
  }
  BOOST_TEST(again);
}

BOOST_AUTO_TEST_CASE(work_submitted_during_a_claim_runs_after_it) {
  ThreadPool pool(1, 8);
  std::mutex mutex;
  std::vector<std::string> order;
  const auto record = [&](const std::string& what) {
    std::lock_guard lock(mutex);
    order.push_back(what);
  };
  const bool claimed = pool.run_here_if_idle(0, [&] {
    record("inline start");
    std::thread other([&] { pool.submit(0, [&] { record("submitted"); }); });
    other.join();
    let_it_block();  // the worker has the submitted task but must not run it yet
    record("inline end");
  });
  BOOST_TEST(claimed);
  pool.stop();
  BOOST_TEST((order == std::vector<std::string>{"inline start", "inline end", "submitted"}));
}

BOOST_AUTO_TEST_CASE(destructor_stops_and_drains) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(2, 64);
    for (int i = 0; i < 100; ++i) pool.submit(static_cast<std::uint64_t>(i), [&] { ++ran; });
  }
  BOOST_TEST(ran.load() == 100);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat::server

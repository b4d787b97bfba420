// Pitfalls of the `signal` backend: a full real-time signal queue, a server killed while
// clients are attached, a dead server's leftover segments, segments that are not ours where
// ours are expected, and an access policy the kernel's signal rules cannot serve.
#define BOOST_TEST_MODULE signal_transport
#include "transport/signal/signal.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include "common/access.hpp"
#include "common/instance.hpp"
#include "common/protocol.hpp"
#include "tests/support/chat_process.hpp"
#include "tests/support/frames.hpp"
#include "tests/support/main_fixture.hpp"
#include "tests/support/support.hpp"
#include "transport/factory.hpp"
#include "transport/names.hpp"
#include "transport/shm/layout.hpp"
#include "transport/signal/sysv_shm.hpp"

namespace bdata = boost::unit_test::data;
namespace fs = std::filesystem;
using namespace chat;
using namespace chat::transport;
using namespace chat::test;

namespace {

// The size of the keyed control segment of servers from before the door.
constexpr std::size_t kPreDoorCtlBytes = 6464;

bool segment_exists(int shmid) {
  shmid_ds ds{};
  return ::shmctl(shmid, IPC_STAT, &ds) == 0;
}

// Runs `body` in a forked child; returns what it reported ("" = success). The child ends
// with _exit, so nothing of the test framework runs twice. Forking is only safe while this
// process has one thread, which the caller checks.
std::string in_child(const std::function<std::string()>& body, pid_t& child,
                     std::chrono::seconds timeout = 60s) {
  int fds[2];
  BOOST_REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  child = ::fork();
  BOOST_REQUIRE(child >= 0);
  if (child == 0) {
    ::close(fds[0]);
    std::string result;
    try {
      result = body();
    } catch (const std::exception& e) {
      result = std::string("exception: ") + e.what();
    }
    if (result.empty()) result = "ok";
    [[maybe_unused]] ssize_t n = ::write(fds[1], result.data(), result.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string got;
  const auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    pollfd p{fds[0], POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) == 0) {
      ::kill(child, SIGKILL);  // our own child, by pid
      got = "child timed out";
      break;
    }
    char buf[512];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  return got == "ok" ? "" : got;
}

std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// ThreadSanitizer runs a background thread of its own once the program has made a thread; it
// knows about fork(), so it does not count.
#if defined(__SANITIZE_THREAD__)
constexpr std::size_t kOwnThreadsAllowed = 2;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr std::size_t kOwnThreadsAllowed = 2;
#else
constexpr std::size_t kOwnThreadsAllowed = 1;
#endif
#else
constexpr std::size_t kOwnThreadsAllowed = 1;
#endif

// True once this process has only its main thread left (and a sanitizer's): the threads of an
// earlier test (its processes' output collectors) may still be on their way out.
bool single_threaded() {
  for (int i = 0; i < 500 && thread_count() > kOwnThreadsAllowed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return thread_count() <= kOwnThreadsAllowed;
}

// An in-process server endpoint that echoes every frame, for one test.
class EchoServer {
 public:
  EchoServer(const fs::path& base, const std::string& instance)
      : dir_(InstanceDir::acquire(base, instance)) {
    ListenOptions lo;
    lo.dir = dir_.path();
    lo.instance = instance;
    lo.max_clients = 4;
    ep_ = sig::listen(lo);
    thread_ = std::thread([this] {
      std::vector<ServerEvent> events;
      while (!stop_) {
        events.clear();
        ep_->poll(events, deadline_after(1s));
        for (auto& e : events) {
          if (e.kind == ServerEvent::Kind::kFrame) ep_->send(e.client, e.frame);
          if (e.kind == ServerEvent::Kind::kDisconnected) ep_->close(e.client);
        }
      }
    });
  }
  ~EchoServer() {
    stop_ = true;
    ep_->wake();
    thread_.join();
    ep_.reset();
    dir_.remove();
  }
  ConnectOptions connect_options() const {
    return arrive(dir_.path(), dir_.instance(), deadline_after(5s));
  }

 private:
  InstanceDir dir_;
  std::unique_ptr<ServerEndpoint> ep_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Queues the doorbell to the calling thread; returns 0 or the errno.
int queue_doorbell_to_self() {
  siginfo_t info{};
  info.si_signo = sig::doorbell_signal();
  info.si_code = SI_QUEUE;
  info.si_pid = ::getpid();
  info.si_uid = ::getuid();
  const long r = ::syscall(SYS_rt_tgsigqueueinfo, ::getpid(), ::gettid(), info.si_signo, &info);
  return r == 0 ? 0 : errno;
}

void drain_doorbells() {
  const sigset_t set = sig::doorbell_signals();
  const timespec zero{0, 0};
  siginfo_t info;
  while (::sigtimedwait(&set, &info, &zero) > 0) {
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(signal_backend)

// With RLIMIT_SIGPENDING at 0 or 1 the real-time doorbell fails with EAGAIN; the standard
// fallback signal must still wake every sleeper at once (a lost doorbell would cost each round
// trip the sleepers' whole 500 ms re-check slice), and no frame may be lost or reordered.
BOOST_DATA_TEST_CASE(doorbell_gets_through_when_the_rt_queue_is_full, bdata::make({0, 1}), limit) {
  TempRuntime rt;
  BOOST_REQUIRE_MESSAGE(single_threaded(), "fork needs a single-threaded test process");
  pid_t child = 0;
  const std::string result = in_child(
      [&]() -> std::string {
        const rlimit rl{static_cast<rlim_t>(limit), static_cast<rlim_t>(limit)};
        if (::setrlimit(RLIMIT_SIGPENDING, &rl) != 0) return "setrlimit failed";
        // Precondition: real-time doorbells to this process really are refused.
        int err = 0;
        for (int i = 0; i <= limit && err == 0; ++i) err = queue_doorbell_to_self();
        drain_doorbells();
        if (err != EAGAIN) return "the real-time queue did not fill up: " + std::to_string(err);

        EchoServer server(rt.base(), rt.instance());
        auto client = sig::connect(server.connect_options());
        constexpr int kFrames = 30;
        auto slowest = Clock::duration::zero();
        for (int i = 0; i < kFrames; ++i) {
          // Both sides stop spinning and sleep in sigtimedwait: only a doorbell wakes them.
          if (!wait_others_sleeping(10000ms)) return "the echo server never went to sleep";
          const std::string text = "frame-" + std::to_string(i);
          const auto start = Clock::now();
          if (client->send(frame_of(text), deadline_after(5s)) != SendResult::kSent) {
            return "send " + std::to_string(i) + " failed";
          }
          Frame f;
          if (client->receive(f, deadline_after(5s)) != ReceiveResult::kFrame) {
            return "echo " + std::to_string(i) + " never arrived";
          }
          if (text_of(f) != text) return "echo " + std::to_string(i) + " was " + text_of(f);
          slowest = std::max(slowest, Clock::now() - start);
        }
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count();
        if (slowest > 250ms)
          return "a doorbell was lost: slowest round trip " + std::to_string(ms) + " ms";
        return "";
      },
      child);
  BOOST_TEST(result == "");
  check_no_leftovers(rt, {::getpid(), child});
}

// A server killed with SIGKILL while a client is attached leaves nothing in `ipcs`: every
// client segment is removed (IPC_RMID) as soon as the server has attached it, and goes with
// the last detach. The client notices the death and ends.
BOOST_AUTO_TEST_CASE(a_killed_server_leaves_no_segment) {
  TempRuntime rt;
  Process server(
      {binary("transport_peer").string(), "server", "signal", rt.base().string(), rt.instance()});
  BOOST_REQUIRE_MESSAGE(server.wait_out_contains("ready", 5s), server.err());
  Process client({binary("transport_peer").string(), "client", "signal", rt.base().string(),
                  rt.instance(), "idle"});
  BOOST_REQUIRE_MESSAGE(client.wait_out_contains("connected", 5s), client.err());
  server.kill(SIGKILL);
  BOOST_REQUIRE(server.exit_code(5s) == 128 + SIGKILL);
  BOOST_TEST(client.wait_out_contains("closed server_alive=0", 5s));
  BOOST_TEST(client.exit_code(5s) == 0);
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const auto stale = dir.stale_info();
  BOOST_REQUIRE(stale);
  BOOST_TEST(sig::cleanup({dir.path(), stale->pid, stale->objects}).empty());
  dir.remove();
  check_no_leftovers(rt, {::getpid(), server.pid(), client.pid()});
}

// What a dead server could still leave (a client segment created the instant before it was
// removed, or the keyed control segment of a server from before the door) is found by its
// creator's pid and key and removed by cleanup; nothing of a live process is touched.
BOOST_AUTO_TEST_CASE(a_dead_servers_segments_are_reclaimed_by_cleanup) {
  TempRuntime rt;
  BOOST_REQUIRE_MESSAGE(single_threaded(), "fork needs a single-threaded test process");
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const fs::path key_file = dir.path() / sig::kSysvKeyFile;
  int client_id = -1;
  int ctl_id = -1;
  int pipe_fds[2];
  BOOST_REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  pid_t dead = 0;
  const std::string result = in_child(
      [&]() -> std::string {
        const int c = ::shmget(IPC_PRIVATE, sizeof(shm::ClientBlock), IPC_CREAT | 0600);
        const int fd = ::open(key_file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (c < 0 || fd < 0) return "cannot create the leftovers";
        ::close(fd);
        const int k = ::shmget(::ftok(key_file.c_str(), sig::kSysvProjectId), kPreDoorCtlBytes,
                               IPC_CREAT | IPC_EXCL | 0600);
        if (k < 0) return "cannot create the keyed segment";
        const int ids[2] = {c, k};
        if (::write(pipe_fds[1], ids, sizeof ids) != sizeof ids) return "write";
        return "";
      },
      dead);
  ::close(pipe_fds[1]);
  int ids[2] = {-1, -1};
  BOOST_REQUIRE(::read(pipe_fds[0], ids, sizeof ids) == static_cast<ssize_t>(sizeof ids));
  ::close(pipe_fds[0]);
  BOOST_REQUIRE(result == "");
  client_id = ids[0];
  ctl_id = ids[1];
  BOOST_REQUIRE(segment_exists(client_id));
  BOOST_REQUIRE(segment_exists(ctl_id));
  const nlohmann::json objects = {{"sysv_key_file", sig::kSysvKeyFile},
                                  {"ctl", std::to_string(ctl_id)}};
  const auto removed = sig::cleanup({dir.path(), dead, objects});
  BOOST_REQUIRE_EQUAL(removed.size(), 2u);
  BOOST_TEST(removed[0].find("control segment") != std::string::npos);
  BOOST_TEST(removed[0].find(std::to_string(ctl_id)) != std::string::npos);
  BOOST_TEST(removed[1].find("client segment") != std::string::npos);
  BOOST_TEST(removed[1].find(std::to_string(client_id)) != std::string::npos);
  BOOST_TEST(!segment_exists(client_id));
  BOOST_TEST(!segment_exists(ctl_id));
  BOOST_TEST(sig::cleanup({dir.path(), dead, objects}).empty());
  fs::remove(key_file);
  dir.remove();
  check_no_leftovers(rt, {::getpid(), dead});
}

// The same through the binaries: a chatd killed with SIGKILL while a client is connected, and
// a new chatd on the instance starts without manual cleanup; nothing is left of either.
BOOST_AUTO_TEST_CASE(a_restarting_chatd_starts_over_a_killed_one) {
  TempRuntime rt;
  auto first = start_chatd(rt, "signal");
  auto alice = start_chat(rt, "alice");
  first->kill(SIGKILL);
  BOOST_REQUIRE(first->exit_code(5s) == 128 + SIGKILL);
  BOOST_TEST(alice->exit_code(5s) == 5);
  auto second = start_chatd(rt, "signal");
  // start_chatd may return on the stale instance.json: wait until it is really serving.
  BOOST_REQUIRE(second->wait_err_contains("serving instance", 5s));
  auto bob = start_chat(rt, "bob");
  bob->close_stdin();
  BOOST_TEST(bob->exit_code(10s) == 0);
  stop_and_check_clean(*second, rt, {::getpid(), first->pid(), alice->pid(), bob->pid()}, 5s);
}

// The kernel lets an unprivileged process signal only processes of its own account, so a
// server that admits other accounts could never wake their clients: listen() says so.
BOOST_DATA_TEST_CASE(listen_refuses_any_access_but_user, bdata::make({"group:", "all"}), spelling) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  ListenOptions lo;
  lo.dir = dir.path();
  lo.instance = rt.instance();
  lo.max_clients = 4;
  std::string text = spelling;
  if (text == "group:") {
    const group* g = ::getgrgid(::getegid());
    BOOST_REQUIRE(g != nullptr);
    text += g->gr_name;
  }
  lo.access = AccessPolicy::parse(text);
  try {
    sig::listen(lo);
    BOOST_ERROR("signal listened with --access=" << text);
  } catch (const std::exception& e) {
    BOOST_TEST(std::string(e.what()).find("--access=user") != std::string::npos);
    BOOST_TEST_MESSAGE(e.what());
  }
  BOOST_TEST(!fs::exists(dir.path() / "door.sock"));
  lo.access = AccessPolicy();
  BOOST_CHECK_NO_THROW(sig::listen(lo));
  dir.remove();
  check_no_leftovers(rt, {::getpid()});
}

// A segment that already has the legacy ftok key — planted, or another instance's after an
// ftok collision — is never shared, and not cleanup's to remove while its creator lives;
// whatever its permissions.
BOOST_DATA_TEST_CASE(a_segment_already_holding_the_key_is_refused, bdata::make({0600, 0644}),
                     mode) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const fs::path key_file = dir.path() / sig::kSysvKeyFile;
  {
    const int fd = ::open(key_file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    BOOST_REQUIRE(fd >= 0);
    ::close(fd);
  }
  const key_t key = ::ftok(key_file.c_str(), sig::kSysvProjectId);
  BOOST_REQUIRE(key != -1);
  const int planted = ::shmget(key, kPreDoorCtlBytes, IPC_CREAT | IPC_EXCL | mode);
  BOOST_REQUIRE_MESSAGE(planted >= 0, "shmget: " << std::strerror(errno));

  // Cleanup leaves it alone: its creator (this process) is alive.
  BOOST_TEST(sig::cleanup({dir.path(), 0, nullptr}).empty());
  BOOST_TEST(sig::cleanup({dir.path(), ::getpid() + 100000, nullptr}).empty());
  BOOST_TEST(segment_exists(planted));

  // The server does not use keys any more: it starts beside it and never attaches it...
  ListenOptions lo;
  lo.dir = dir.path();
  lo.instance = rt.instance();
  lo.max_clients = 4;
  BOOST_CHECK_NO_THROW(sig::listen(lo));
  // ...and creating a segment under the key it names fails rather than sharing it.
  try {
    sig::SysvSegment::create(key, kPreDoorCtlBytes, "test");
    BOOST_ERROR("created a segment under a key that is taken");
  } catch (const std::system_error& e) {
    BOOST_TEST(e.code().value() == EEXIST);
    BOOST_TEST_MESSAGE(e.what());
  }
  const shmid_ds ds = sig::stat_sysv_segment(planted);
  BOOST_TEST(ds.shm_nattch == 0u);  // nobody ever attached it
  BOOST_TEST(segment_exists(planted));

  BOOST_REQUIRE(::shmctl(planted, IPC_RMID, nullptr) == 0);  // ours: we planted it
  dir.remove();
  check_no_leftovers(rt, {::getpid()});
}

// A client maps only private segments of ours of the expected size, by an id that must be
// one.
BOOST_AUTO_TEST_CASE(attach_refuses_segments_that_are_not_private_and_ours) {
  TempRuntime rt;
  auto memory = sig::make_sysv_source();
  constexpr std::size_t kBytes = 8192;
  const uid_t me = ::geteuid();
  std::vector<int> made;
  const auto make = [&](std::size_t bytes, int mode) {
    const int id = ::shmget(IPC_PRIVATE, bytes, IPC_CREAT | mode);
    BOOST_REQUIRE(id >= 0);
    made.push_back(id);
    return nlohmann::json{{sig::kChannelShmid, id}};
  };
  BOOST_CHECK_NO_THROW(memory->attach(make(kBytes, 0600), {}, kBytes, me));
  BOOST_CHECK_THROW(memory->attach(make(kBytes, 0640), {}, kBytes, me), std::system_error);
  BOOST_CHECK_THROW(memory->attach(make(kBytes, 0606), {}, kBytes, me), std::system_error);
  BOOST_CHECK_THROW(memory->attach(make(kBytes + 4096, 0600), {}, kBytes, me), std::system_error);
  // A server of another account could not signal us anyway.
  BOOST_CHECK_THROW(memory->attach(make(kBytes, 0600), {}, kBytes, me + 1), std::exception);
  if (::geteuid() == 0) {
    // Only root can give a segment away; a segment of another user is refused.
    const nlohmann::json channel = make(kBytes, 0600);
    const int id = channel[sig::kChannelShmid].get<int>();
    shmid_ds ds = sig::stat_sysv_segment(id);
    ds.shm_perm.uid = 65534;
    BOOST_REQUIRE(::shmctl(id, IPC_SET, &ds) == 0);
    BOOST_CHECK_THROW(memory->attach(channel, {}, kBytes, me), std::system_error);
  }
  for (const nlohmann::json& bad :
       {nlohmann::json(""), nlohmann::json(-1), nlohmann::json("12"), nlohmann::json(1e12),
        nlohmann::json(nullptr), nlohmann::json(99999999999LL)}) {
    BOOST_CHECK_THROW(memory->attach({{sig::kChannelShmid, bad}}, {}, kBytes, me), std::exception);
  }
  BOOST_CHECK_THROW(memory->attach(nlohmann::json::object(), {}, kBytes, me), std::exception);
  for (int id : made) BOOST_REQUIRE(::shmctl(id, IPC_RMID, nullptr) == 0);
  check_no_leftovers(rt, {::getpid()});
}

// Wakers send to the tid in shared memory, which anyone can overwrite: it must only ever
// reach a thread of the process the waker means, never another process (whose default
// action for a real-time signal is to die).
BOOST_AUTO_TEST_CASE(a_scribbled_sleeper_tid_never_signals_another_process) {
  TempRuntime rt;
  // Real-time signals unblocked: one would kill it before it answers.
  Process bystander({"/bin/sh", "-c", "read line && echo alive"});
  shm::WakeArea area{};
  auto waker = sig::make_waker();
  waker->init(area);
  area.sleeper_tid.store(bystander.pid());
  waker->wake(area, ::getpid());  // "our" sleeper, with the other process's pid as tid
  area.sleeper_tid.store(-5);
  waker->wake(area, ::getpid());
  area.sleeper_tid.store(0);
  waker->wake(area, ::getpid());
  // A signal queued to it above is delivered before its read() returns to it: that it reads
  // the line and answers proves none was.
  bystander.write("are you there\n");
  BOOST_TEST(bystander.wait_out_contains("alive", 20s), bystander.err());
  BOOST_TEST(bystander.exit_code(20s) == 0);
  drain_doorbells();
  check_no_leftovers(rt, {::getpid()});
}

// A doorbell wakes exactly the thread that attached, promptly, and a sleep without one lasts
// until its deadline.
BOOST_AUTO_TEST_CASE(doorbell_wakes_the_attached_thread) {
  TempRuntime rt;
  shm::WakeArea area{};
  auto waker = sig::make_waker();
  waker->init(area);
  std::atomic<bool> attached{false};
  std::atomic<pid_t> sleeper_tid{0};
  Clock::duration slept{};
  std::thread sleeper([&] {
    sleeper_tid = ::gettid();
    waker->attach_sleeper(area);
    area.sleeping.store(1);
    attached = true;
    const auto start = Clock::now();
    waker->sleep(area, deadline_after(10s));
    slept = Clock::now() - start;
  });
  while (!attached) std::this_thread::sleep_for(1ms);
  // Asleep in its wait (not still on its way to it): only the doorbell can end it early.
  BOOST_REQUIRE(wait_thread_sleeping(sleeper_tid.load(), 10000ms));
  shm::notify(*waker, area, ::getpid());
  sleeper.join();
  BOOST_TEST((slept < 5s));
  BOOST_TEST(area.sleeping.load() == 0u);

  const auto start = Clock::now();
  waker->attach_sleeper(area);
  waker->sleep(area, deadline_after(100ms));
  BOOST_TEST((Clock::now() - start >= 100ms));
  check_no_leftovers(rt, {::getpid()});
}

BOOST_AUTO_TEST_CASE(leftover_check_ignores_segments_older_than_the_test) {
  // A segment leaked long ago by a process whose pid a test process now has is not the test's
  // leftover (this once failed a test on a machine that had kept such a segment for hours).
  TempRuntime rt;
  const int id = ::shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
  BOOST_REQUIRE(id >= 0);
  const std::string name = "SysV shm id " + std::to_string(id);
  const auto has = [&](std::time_t since) {
    const auto left = transport::leftover_ipc_objects(rt.dir(), {::getpid()}, since);
    return std::find(left.begin(), left.end(), name) != left.end();
  };
  const std::time_t now = std::time(nullptr);
  BOOST_TEST(has(now - 5));   // changed since: ours
  BOOST_TEST(!has(now + 5));  // older than the test: not
  BOOST_TEST(::shmctl(id, IPC_RMID, nullptr) == 0);
  BOOST_TEST(!has(now - 5));
}

BOOST_AUTO_TEST_SUITE_END()

// How the msgq endpoint works around what SysV queues lack:
//  - No readiness notification and no way to wait on a queue and anything else at once: the
//    reader itself (the server's I/O thread in poll(), the client in receive()) blocks in msgrcv
//    on its queue, so a message costs one wake-up. Whatever else must interrupt it -- wake(), a
//    client's death, a send() that found a queue full, a deadline -- sets a flag and puts a small
//    wake-up message (kWake, with a secret) into that same queue, at most one at a time
//    (QueueBell); the reader looks at its flags before each blocking msgrcv. msgrcv has no
//    timeout: a helper thread (Alarm) sleeps until the reader's deadline and rings then, and on
//    the client also waits for the server's pidfd. It does nothing per message.
//  - No "writable again": send() uses IPC_NOWAIT and says kFull; while any client queue is full
//    (or a closed one still holds frames) the I/O thread has the alarm wake it every kRecheck to
//    look at it with IPC_STAT. An idle server sleeps until its caller's deadline.
//  - No end-of-file: a client's end is a goodbye message or its pidfd; the server's end is the
//    removal of the client's queue, kept until the client has read it (at most kLinger); a dead
//    server's end is an empty queue once its pidfd says it has exited.
//  - Anybody of our uid may write anything into the server queue: every message from a
//    connected client carries its id and a secret token; what fails to say who sent it is
//    dropped, what a known client gets wrong disconnects that client. A forged wake-up is a
//    spurious wake-up: the reader finds nothing to do and blocks again.
#include "transport/msgq/msgq.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "common/instance.hpp"
#include "common/log.hpp"
#include "transport/msgq/sysv_queue.hpp"
#include "transport/msgq/wire.hpp"
#include "transport/names.hpp"
#include "transport/pid_watch.hpp"
#include "transport/warn_limiter.hpp"

namespace chat::transport::msgq {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Gone = ServerEvent::Gone;

constexpr char kKeyFile[] = "msgq.key";
constexpr char kRecordFile[] = "msgq.queues";
// ftok project ids tried in turn; all taken by other queues is an error.
constexpr int kProjectIds[] = {'m', 'q', 'M', 'Q'};
constexpr auto kHandshakeTimeout = 5s;  // a hello whose client never gets ready is dropped
// Handshakes in progress at once; further hellos wait (up to kMaxWaitingHellos, then they are
// dropped) so that a burst of clients is served in turn.
constexpr std::size_t kMaxPendingHellos = 64;
constexpr std::size_t kMaxWaitingHellos = 4096;
// SysV queues tell nobody when they have room again, or when they are empty: while a client
// queue is full, or a closed one still holds frames, the server looks again this often. Only
// then: an idle server sleeps.
constexpr auto kRecheck = 2ms;
// Messages one poll() takes off the server queue at most before it reports what it has.
constexpr std::size_t kMaxBatch = 512;
// A closed client's queue is kept until the client has read it, at most this long.
constexpr auto kLinger = 1s;
// A dead client's death is reported after a marker that follows its last message through the
// server queue; if the queue stays full that long, it is reported without.
constexpr auto kMarkTimeout = 500ms;
constexpr std::size_t kRecordCompactLines = 4096;
constexpr ClientId kFirstClientId = 1;

// msgsnd without waiting: 0, or the errno (EAGAIN: the queue is full).
template <typename Body>
int send_message(int queue, long mtype, const Body& body, std::span<const std::byte> payload = {}) {
  wire::Buffer b;
  b.mtype = mtype;
  std::memcpy(b.text, &body, sizeof body);
  if (!payload.empty()) std::memcpy(b.text + sizeof body, payload.data(), payload.size());
  const std::size_t size = sizeof body + payload.size();
  const int r = retry_eintr([&] { return ::msgsnd(queue, &b, size, IPC_NOWAIT); });
  return r == 0 ? 0 : errno;
}

timespec timespec_until(Deadline d) {
  const auto left = std::max(d - Clock::now(), Clock::duration::zero());
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(left);
  return {
      static_cast<time_t>(s.count()),
      static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(left - s).count())};
}

// poll() with sub-millisecond precision; `deadline` may be kNoDeadline.
int poll_until(pollfd* fds, nfds_t n, Deadline deadline) {
  return retry_eintr([&] {
    if (deadline == kNoDeadline) return ::ppoll(fds, n, nullptr, nullptr);
    const timespec ts = timespec_until(deadline);
    return ::ppoll(fds, n, &ts, nullptr);
  });
}

// A file this process created; unlinked on destruction. Move-only.
class OwnedFile {
 public:
  OwnedFile() = default;
  // Creates `path` O_EXCL, 0600 whatever the umask. Throws std::system_error.
  explicit OwnedFile(fs::path path) {
    UniqueFd fd = open_private_file(path, O_WRONLY | O_CREAT | O_EXCL);
    if (::fchmod(fd.get(), 0600) != 0) throw_system_error("fchmod", path.string());
    path_ = std::move(path);
  }
  OwnedFile(OwnedFile&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  OwnedFile& operator=(OwnedFile&&) = delete;
  OwnedFile(const OwnedFile&) = delete;
  OwnedFile& operator=(const OwnedFile&) = delete;
  ~OwnedFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Wake-ups for a reader blocked in msgrcv on `queue`, put into that queue by its own process:
// at most one at a time, so that they cannot pile up. Whoever rings sets its flag first; the
// reader looks at its flags after taking the wake-up and before each blocking msgrcv. Any thread.
class QueueBell {
 public:
  QueueBell(int queue, std::uint64_t secret) : queue_(queue), secret_(secret) {}

  void ring() {
    requests_.fetch_add(1);
    // Anyone of our uid may read the queue: a wake-up sent over kStolenAfter ago that is no
    // longer in an empty queue was stolen, and waiting on for it would leave the reader asleep
    // for good. Send another.
    if (queued_.load() && Clock::now().time_since_epoch().count() - queued_at_.load() >
                              std::chrono::duration_cast<Clock::duration>(kStolenAfter).count()) {
      msqid_ds ds{};
      if (stat_queue(queue_, ds) && ds.msg_qnum == 0) queued_ = false;
    }
    while (!queued_.exchange(true)) {
      queued_at_ = Clock::now().time_since_epoch().count();
      const std::uint64_t seen = requests_.load();
      const int err = send_message(queue_, wire::kWake, wire::WakeMsg{secret_});
      if (err == 0) return;
      // The queue is full, so its reader is not blocked and looks at its flags before it blocks
      // again (or the queue is gone). But whoever rang since `seen` counted on this wake-up and
      // set its flag maybe too late for that: try again for them.
      queued_ = false;
      if (err != EAGAIN || requests_.load() == seen) return;
    }
  }

  // For the reader, given a kWake message it took: true if it was ours (one may be sent again).
  bool take(std::span<const std::byte> text) {
    wire::WakeMsg w;
    if (text.size() != sizeof w) return false;
    std::memcpy(&w, text.data(), sizeof w);
    if (w.secret != secret_) return false;
    queued_ = false;
    return true;
  }

 private:
  static constexpr auto kStolenAfter = std::chrono::seconds(1);
  const int queue_;
  const std::uint64_t secret_;
  std::atomic<bool> queued_{false};       // a wake-up is in the queue (or on its way)
  std::atomic<Clock::rep> queued_at_{0};  // when, on Clock
  std::atomic<std::uint64_t> requests_{0};
};

// What a reader blocked in msgrcv cannot wait for itself, on a thread of its own: calls `ring`
// once the deadline last given to set() has passed (and each second after, until set() is
// called again: a stolen ring must not leave the reader asleep for good), and `exited` once the
// process behind `pidfd` (if not -1; not owned) has exited. Both run on that thread. Costs nothing
// per message: set() only disturbs the thread when the new deadline is earlier than the one it
// sleeps until.
class Alarm {
 public:
  explicit Alarm(std::function<void()> ring, int pidfd = -1, std::function<void()> exited = {})
      : ring_(std::move(ring)),
        exited_(std::move(exited)),
        pidfd_(pidfd),
        bell_(make_eventfd("msgq alarm")),
        thread_([this] { run(); }) {}
  ~Alarm() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    signal_eventfd(bell_.get());
    thread_.join();
  }
  Alarm(const Alarm&) = delete;
  Alarm& operator=(const Alarm&) = delete;

  // Rings once `due` has passed (kNoDeadline: never), instead of at the previous deadline, and
  // again every kRingAgain until the next set().
  void set(Deadline due) {
    bool earlier;
    {
      std::lock_guard lock(mutex_);
      due_ = due;
      earlier = due < sleeping_until_;
    }
    if (earlier) signal_eventfd(bell_.get());
  }

 private:
  void run() {
    bool watching = pidfd_ >= 0;
    std::unique_lock lock(mutex_);
    while (!stop_) {
      if (due_ != kNoDeadline && Clock::now() >= due_) {
        // Again in a while unless the reader comes back with a new deadline first: the ring
        // may have been stolen from the queue (see QueueBell::ring).
        due_ = Clock::now() + kRingAgain;
        lock.unlock();
        ring_();
        lock.lock();
        continue;
      }
      const Deadline until = due_;
      sleeping_until_ = until;
      lock.unlock();
      pollfd p[2] = {{bell_.get(), POLLIN, 0}, {pidfd_, POLLIN, 0}};
      poll_until(p, watching ? 2 : 1, until);
      if (p[0].revents != 0) drain_eventfd(bell_.get());
      if (watching && p[1].revents != 0) {
        watching = false;
        exited_();
      }
      lock.lock();
      sleeping_until_ = Deadline::min();  // awake: reads due_ before it sleeps again
    }
  }

  static constexpr auto kRingAgain = std::chrono::seconds(1);
  const std::function<void()> ring_;
  const std::function<void()> exited_;
  const int pidfd_;
  UniqueFd bell_;     // eventfd: an earlier deadline, or stop
  std::mutex mutex_;  // guards the three below
  Deadline due_ = kNoDeadline;
  Deadline sleeping_until_ = Deadline::min();
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest is ready
};

class Server final : public ServerEndpoint {
 public:
  explicit Server(const ListenOptions& o)
      : warn_(o.logger, "msgq"),
        max_connections_(std::max<std::size_t>(o.max_clients * 2, o.max_clients + 64)),
        key_file_(o.dir / kKeyFile),
        record_(QueueRecord::create(o.dir / kRecordFile)),
        secret_(random_nonce("msgq")) {
    for (const int project : kProjectIds) {
      const key_t key = ::ftok(key_file_.path().c_str(), project);
      if (key == -1) throw_system_error("ftok", key_file_.path().string());
      try {
        queue_ = OwnedQueue::create(key, "server queue (ftok " + key_file_.path().string() + ")");
        project_ = project;
        break;
      } catch (const std::system_error& e) {
        if (e.code().value() != EEXIST) throw;
      }
    }
    if (!queue_) {
      throw_system_error("msgget",
                         "every ftok key of " + key_file_.path().string() +
                             " is taken by another queue; refusing to share one",
                         EEXIST);
    }
    record_.add(queue_);
    bell_.emplace(queue_.id(), secret_);
    alarm_ = std::make_unique<Alarm>([this] { bell_->ring(); });
    watcher_ = std::make_unique<PidWatcher>([this](std::uint64_t id) {
      {
        std::lock_guard lock(mutex_);
        deaths_.push_back(id);
      }
      bell_->ring();
    });
  }

  ~Server() override {
    watcher_.reset();  // no more death callbacks
    alarm_.reset();    // nor wake-ups: the queue's id may be reused once it is gone
    linger_all();
    queue_.reset();
    std::lock_guard lock(mutex_);
    connections_.clear();  // removes the client queues; then record_ and key_file_ go
    lingering_.clear();
  }

  // Blocks in msgrcv itself: what arrives wakes this thread and no other. Everything else that
  // may need it rings bell_ after setting what it looks at here, before it blocks again.
  void poll(std::vector<ServerEvent>& events, Deadline deadline) override {
    for (;;) {
      if (queue_error_ != 0) {
        if (!events.empty()) return;  // thrown at the next poll()
        throw_system_error("msgrcv", "server queue " + std::to_string(queue_.id()), queue_error_);
      }
      const bool woken = woken_.exchange(false);
      process_deaths(events);
      check_full(events);
      check_lingering();
      expire_handshakes();
      while (!waiting_hellos_.empty() && handshakes_.size() < kMaxPendingHellos) {
        answer_hello(waiting_hellos_.front());
        waiting_hellos_.pop_front();
      }
      const Deadline until = next_wakeup(deadline);
      const bool block = events.empty() && !woken && Clock::now() < until;
      if (block) alarm_->set(until);
      receive_messages(events, block);
      if (queue_error_ != 0 && events.empty()) continue;  // thrown above
      if (woken || !events.empty() || Clock::now() >= deadline) return;
    }
  }

  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    check_frame_size(frame.size());
    int queue;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(id);
      if (it == connections_.end() || !it->second->connected || it->second->gone_reported) {
        return SendResult::kGone;
      }
      queue = it->second->queue.id();
    }
    wire::Buffer b;
    b.mtype = wire::kData;
    std::memcpy(b.text, frame.data(), frame.size());
    if (retry_eintr([&] { return ::msgsnd(queue, &b, frame.size(), IPC_NOWAIT); }) == 0) {
      return SendResult::kSent;
    }
    if (errno != EAGAIN) return SendResult::kGone;  // EIDRM, EINVAL: the queue is gone
    bool first_full;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(id);
      if (it == connections_.end()) return SendResult::kGone;
      it->second->want_writable = true;
      first_full = full_.empty();
      full_.insert(id);
    }
    if (first_full) bell_->ring();  // the I/O thread starts re-checking
    return SendResult::kFull;
  }

  void close(ClientId id) override {
    std::shared_ptr<Conn> c;
    bool reader_gone;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(id);
      if (it == connections_.end()) return;
      c = std::move(it->second);
      connections_.erase(it);
      full_.erase(id);
      reader_gone = c->bye || c->died;
    }
    watcher_->unwatch(id);  // not under mutex_: the watcher's callback takes it
    msqid_ds ds{};
    if (reader_gone || !stat_queue(c->queue.id(), ds) || ds.msg_qnum == 0) {
      return;  // nobody will read more: `c` takes its queue with it
    }
    // The client still has frames to read. Its queue's removal is what it sees as the end of
    // the connection, so the queue stays until it is empty (or kLinger has passed).
    {
      std::lock_guard lock(mutex_);
      lingering_.push_back({std::move(c->queue), deadline_after(kLinger)});
    }
    bell_->ring();  // the I/O thread starts re-checking
  }

  void wake() override {
    woken_ = true;
    bell_->ring();
  }

  std::size_t buffered(ClientId id) override {
    int queue;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(id);
      if (it == connections_.end() || !it->second->connected) return 0;
      queue = it->second->queue.id();
    }
    msqid_ds ds{};
    return stat_queue(queue, ds) ? static_cast<std::size_t>(ds.msg_cbytes) : 0;
  }

  nlohmann::json objects() const override {
    return {{"key_file", key_file_.path().string()},
            {"project", project_},
            {"key", queue_.key()},
            {"queue", queue_.id()},
            {"record", (key_file_.path().parent_path() / kRecordFile).string()}};
  }

 private:
  struct Conn {
    ClientId id = 0;
    pid_t pid = 0;
    std::uint64_t token = 0;
    OwnedQueue queue;
    // Guarded by mutex_.
    bool connected = false;  // got kReady; until then known to the I/O thread only
    bool gone_reported = false;
    bool bye = false;
    bool died = false;
    bool want_writable = false;
  };

  struct Lingering {
    OwnedQueue queue;
    Deadline until;
  };

  // A message taken off the server queue, in buffer_.
  struct Inbound {
    long mtype = 0;
    bool oversize = false;  // longer than any valid message; cut
    std::span<const std::byte> text;
  };

  // Takes what is in the server queue, up to kMaxBatch messages, waiting for the first one if
  // `block`. A failure other than an empty queue (EIDRM, EINVAL: the queue was removed under us)
  // is kept in queue_error_ for poll() to report.
  void receive_messages(std::vector<ServerEvent>& events, bool block) {
    for (std::size_t n = 0; n < kMaxBatch; ++n) {
      // MSG_NOERROR: a message too long is cut and taken, rather than left to block the queue.
      const int flags = MSG_NOERROR | (block && n == 0 ? 0 : IPC_NOWAIT);
      const ssize_t got = retry_eintr(
          [&] { return ::msgrcv(queue_.id(), buffer_.get(), sizeof buffer_->text, 0, flags); });
      if (got < 0) {
        if (errno != ENOMSG) queue_error_ = errno;
        return;
      }
      const auto size = static_cast<std::size_t>(got);
      handle_message({buffer_->mtype,
                      size > wire::kMaxMessageBytes,
                      {buffer_->text, std::min(size, wire::kMaxMessageBytes)}},
                     events);
    }
  }

  Deadline next_wakeup(Deadline deadline) {
    Deadline until = deadline;
    for (const auto& [id, when] : handshakes_) until = std::min(until, when);
    bool recheck = !unmarked_.empty();
    {
      std::lock_guard lock(mutex_);
      recheck = recheck || !full_.empty() || !lingering_.empty();
    }
    if (recheck) until = std::min(until, deadline_after(kRecheck));
    return until;
  }

  std::shared_ptr<Conn> find(ClientId id) {
    std::lock_guard lock(mutex_);
    const auto it = connections_.find(id);
    return it == connections_.end() ? nullptr : it->second;
  }

  void handle_message(const Inbound& m, std::vector<ServerEvent>& events) {
    if (m.mtype == wire::kUp) {
      handle_up(m, events);
    } else if (m.mtype == wire::kHello) {
      wire::HelloMsg h;
      if (m.oversize || m.text.size() != sizeof h) {
        return warn_("a hello of " + std::to_string(m.text.size()) + " bytes (not " +
                     std::to_string(sizeof h) + "); dropped");
      }
      std::memcpy(&h, m.text.data(), sizeof h);
      if (handshakes_.size() < kMaxPendingHellos && waiting_hellos_.empty()) {
        answer_hello(h);
      } else if (waiting_hellos_.size() < kMaxWaitingHellos) {
        waiting_hellos_.push_back(h);
      } else {
        warn_("hello from pid " + std::to_string(h.pid) + ": too many hellos waiting; dropped");
      }
    } else if (m.mtype == wire::kMark) {
      handle_mark(m, events);
    } else if (m.mtype == wire::kWake) {
      // Ours, or forged: either way poll() looks at its flags again, and that is all.
      if (!bell_->take(m.text)) warn_("a forged wake-up; dropped");
    } else {
      warn_("a message of unknown type " + std::to_string(m.mtype) + " (" +
            std::to_string(m.text.size()) + " bytes) in the server queue; dropped");
    }
  }

  void handle_up(const Inbound& m, std::vector<ServerEvent>& events) {
    wire::UpHeader h;
    if (m.text.size() < sizeof h) {
      return warn_("a message of " + std::to_string(m.text.size()) +
                   " bytes, too short for its header; dropped");
    }
    std::memcpy(&h, m.text.data(), sizeof h);
    const std::shared_ptr<Conn> c = find(h.client);
    if (!c) {
      // A client closed by the server may not know yet, and say more: not worth a warning.
      if (h.client >= kFirstClientId && h.client < next_id_) return;
      return warn_("a message for client " + std::to_string(h.client) +
                   ", which does not exist; dropped");
    }
    if (h.token != c->token) {
      // The sender is not client h.client, and nothing says who it is: drop it, and leave the
      // client it pretends to be alone.
      return warn_("a message claiming to be from client " + std::to_string(h.client) +
                   " with the wrong token (forged); dropped");
    }
    bool connected;
    {
      std::lock_guard lock(mutex_);
      if (c->gone_reported) return;
      connected = c->connected;
    }
    const std::size_t payload = m.text.size() - sizeof h;
    std::string error;
    if (!connected) {
      if (h.kind == wire::UpKind::kReady && payload == 0 && !m.oversize) {
        return complete_handshake(c, events);
      }
      return abort_handshake(c->id, "the first message was not kReady");
    }
    if (h.kind == wire::UpKind::kData) {
      if (!m.oversize && payload >= 1 && payload <= kMaxFrameBytes) {
        ServerEvent ev;
        ev.kind = ServerEvent::Kind::kFrame;
        ev.client = c->id;
        ev.frame.assign(m.text.begin() + sizeof h, m.text.end());
        events.push_back(std::move(ev));
        return;
      }
      error = m.oversize ? "a data message longer than " + std::to_string(kMaxFrameBytes) + " bytes"
                         : "a data message of " + std::to_string(payload) + " bytes";
    } else if (h.kind == wire::UpKind::kBye) {
      {
        std::lock_guard lock(mutex_);
        c->bye = true;
      }
      return report_gone(*c, Gone::kClosed, "", events);
    } else if (h.kind == wire::UpKind::kReady) {
      error = "a second kReady";
    } else {
      error = "a message of unknown kind " + std::to_string(static_cast<std::uint32_t>(h.kind));
    }
    report_gone(*c, Gone::kMalformed, error, events);
  }

  void handle_mark(const Inbound& m, std::vector<ServerEvent>& events) {
    wire::MarkMsg mark;
    if (m.text.size() != sizeof mark) return warn_("a forged marker; dropped");
    std::memcpy(&mark, m.text.data(), sizeof mark);
    if (mark.secret != secret_) return warn_("a forged marker; dropped");
    // Everything the dead client sent came before this marker, and has been delivered.
    if (const auto c = find(mark.client)) report_gone(*c, Gone::kDied, "", events);
  }

  // Reports the end of a connected client once; its queue stays until close().
  void report_gone(Conn& c, Gone how, std::string detail, std::vector<ServerEvent>& events) {
    {
      std::lock_guard lock(mutex_);
      if (c.gone_reported) return;
      c.gone_reported = true;
      if (how == Gone::kDied) c.died = true;
    }
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kDisconnected;
    ev.client = c.id;
    ev.gone = how;
    ev.detail = std::move(detail);
    events.push_back(std::move(ev));
  }

  // A hello is never trusted: anything wrong with it is logged and the hello dropped.
  void answer_hello(const wire::HelloMsg& h) {
    const std::string who = "hello from pid " + std::to_string(h.pid);
    if (h.magic != wire::kMagic || h.version != wire::kVersion) {
      return warn_("a hello with a wrong magic number or version; dropped");
    }
    if (h.pid <= 0) return warn_(who + ": not a process id; dropped");
    {
      std::lock_guard lock(mutex_);
      if (connections_.size() >= max_connections_) {
        return warn_(who + ": too many connections; dropped");
      }
    }
    struct stat st {};
    const std::string proc = "/proc/" + std::to_string(h.pid);
    if (::stat(proc.c_str(), &st) != 0) return warn_(who + ", which does not exist; dropped");
    if (st.st_uid != ::geteuid()) return warn_(who + ", a process of another user; dropped");
    try {
      UniqueFd pidfd = open_pidfd(h.pid);
      if (!pidfd) return warn_(who + ", which does not exist; dropped");
      auto c = std::make_shared<Conn>();
      c->id = next_id_++;
      c->pid = h.pid;
      c->token = random_nonce("msgq");
      c->queue = OwnedQueue::create(wire::client_key(h.nonce),
                                    "client queue of pid " + std::to_string(h.pid));
      record(c->queue);  // before anybody can learn of it
      wire::WelcomeMsg w;
      w.nonce = h.nonce;
      w.client = c->id;
      w.token = c->token;
      if (const int err = send_message(c->queue.id(), wire::kWelcome, w); err != 0) {
        throw_system_error("msgsnd", "welcome", err);
      }
      watcher_->watch(c->id, std::move(pidfd));
      {
        std::lock_guard lock(mutex_);
        connections_.emplace(c->id, c);
      }
      handshakes_.emplace(c->id, deadline_after(kHandshakeTimeout));
    } catch (const std::exception& e) {
      warn_(who + ": cannot answer it: " + e.what());
    }
  }

  void complete_handshake(const std::shared_ptr<Conn>& c, std::vector<ServerEvent>& events) {
    handshakes_.erase(c->id);
    {
      std::lock_guard lock(mutex_);
      c->connected = true;
    }
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kConnected;
    ev.client = c->id;
    ev.pid = c->pid;
    events.push_back(std::move(ev));
  }

  void abort_handshake(ClientId id, const std::string& why) {
    if (!why.empty()) warn_("handshake with client " + std::to_string(id) + " failed: " + why);
    handshakes_.erase(id);
    watcher_->unwatch(id);
    std::lock_guard lock(mutex_);
    connections_.erase(id);  // removes its queue
  }

  void expire_handshakes() {
    const auto now = Clock::now();
    std::vector<ClientId> expired;
    for (const auto& [id, when] : handshakes_) {
      if (when <= now) expired.push_back(id);
    }
    for (const ClientId id : expired) abort_handshake(id, "it never got ready");
  }

  // Deaths seen by the pid watcher. A dead client may still have messages in the server queue,
  // ahead of anything sent after its death: a marker sent now comes after all of them, and the
  // death is reported when the marker comes out.
  void process_deaths(std::vector<ServerEvent>& events) {
    std::vector<ClientId> died;
    {
      std::lock_guard lock(mutex_);
      died.swap(deaths_);
    }
    for (const ClientId id : died) {
      if (handshakes_.count(id) != 0) {
        abort_handshake(id, "");
      } else {
        unmarked_.emplace(id, deadline_after(kMarkTimeout));
      }
    }
    for (auto it = unmarked_.begin(); it != unmarked_.end();) {
      const wire::MarkMsg mark{secret_, it->first};
      const int err = send_message(queue_.id(), wire::kMark, mark);
      if (err == EAGAIN && Clock::now() < it->second) {
        ++it;  // the queue is full: try again at the next re-check
        continue;
      }
      if (err != 0) {
        if (const auto c = find(it->first)) report_gone(*c, Gone::kDied, "", events);
      }
      it = unmarked_.erase(it);
    }
  }

  // Reports kWritable for full client queues that are at most half full again.
  void check_full(std::vector<ServerEvent>& events) {
    std::vector<std::pair<ClientId, int>> full;
    {
      std::lock_guard lock(mutex_);
      for (const ClientId id : full_) {
        const auto it = connections_.find(id);
        if (it != connections_.end()) full.emplace_back(id, it->second->queue.id());
      }
    }
    for (const auto& [id, queue] : full) {
      msqid_ds ds{};
      if (stat_queue(queue, ds) && ds.msg_cbytes > ds.msg_qbytes / 2) continue;
      {
        std::lock_guard lock(mutex_);
        full_.erase(id);
        const auto it = connections_.find(id);
        if (it == connections_.end() || !it->second->want_writable) continue;
        it->second->want_writable = false;
      }
      ServerEvent ev;
      ev.kind = ServerEvent::Kind::kWritable;
      ev.client = id;
      events.push_back(std::move(ev));
    }
  }

  // Removes the queues of closed clients once they are empty (or have lingered long enough).
  void check_lingering() {
    const auto now = Clock::now();
    std::lock_guard lock(mutex_);
    std::erase_if(lingering_, [&](const Lingering& l) {
      msqid_ds ds{};
      return now >= l.until || !stat_queue(l.queue.id(), ds) || ds.msg_qnum == 0;
    });
  }

  // On destruction: give every client that still has frames to read up to kLinger to read
  // them (its shutdown notice among them), then let the queues go.
  void linger_all() {
    const Deadline until = deadline_after(kLinger);
    for (;;) {
      bool waiting = false;
      {
        std::lock_guard lock(mutex_);
        for (const auto& [id, c] : connections_) {
          msqid_ds ds{};
          if (c->connected && !c->died && !c->bye && stat_queue(c->queue.id(), ds) &&
              ds.msg_qnum > 0) {
            waiting = true;
          }
        }
        for (const auto& l : lingering_) {
          msqid_ds ds{};
          if (stat_queue(l.queue.id(), ds) && ds.msg_qnum > 0) waiting = true;
        }
      }
      if (!waiting || Clock::now() >= until) return;
      std::this_thread::sleep_for(kRecheck);
    }
  }

  // Records a new queue, compacting the record first when removed queues dominate it.
  void record(const OwnedQueue& queue) {
    std::lock_guard lock(mutex_);
    if (record_.lines() >= kRecordCompactLines &&
        record_.lines() >= 4 * (connections_.size() + lingering_.size() + 1)) {
      std::vector<const OwnedQueue*> live{&queue_};
      for (const auto& [id, c] : connections_) live.push_back(&c->queue);
      for (const auto& l : lingering_) live.push_back(&l.queue);
      record_.rewrite(live);
    }
    record_.add(queue);
  }

  WarnLimiter warn_;  // I/O thread only
  std::size_t max_connections_;
  OwnedFile key_file_;
  QueueRecord record_;
  OwnedQueue queue_;
  int project_ = 0;
  const std::uint64_t secret_;  // authenticates our own markers and wake-ups in the server queue

  // Owned by the I/O thread.
  std::unique_ptr<wire::Buffer> buffer_ = std::make_unique<wire::Buffer>();
  int queue_error_ = 0;                        // msgrcv failed: the server queue is gone
  std::map<ClientId, Deadline> handshakes_;    // pending clients and their deadlines
  std::map<ClientId, Deadline> unmarked_;      // dead clients whose marker is not sent yet
  std::deque<wire::HelloMsg> waiting_hellos_;  // while kMaxPendingHellos are in progress
  ClientId next_id_ = kFirstClientId;

  std::mutex mutex_;  // guards connections_ (and each Conn's flags), full_, lingering_, deaths_
  std::unordered_map<ClientId, std::shared_ptr<Conn>> connections_;  // pending ones too
  std::unordered_set<ClientId> full_;                                // want_writable
  std::vector<Lingering> lingering_;
  std::vector<ClientId> deaths_;

  std::atomic<bool> woken_{false};  // wake() was called
  std::optional<QueueBell> bell_;   // wakes the I/O thread blocked in msgrcv on queue_
  std::unique_ptr<Alarm> alarm_;    // rings bell_ at the I/O thread's deadline
  std::unique_ptr<PidWatcher> watcher_;
};

class Client final : public ClientConnection {
 public:
  explicit Client(const ConnectOptions& o)
      : server_pidfd_(open_pidfd(o.server_pid)), nonce_(random_nonce("msgq")) {
    if (!server_pidfd_) {
      throw ConnectError(
          ConnectError::Kind::kNoServer,
          "the server process (pid " + std::to_string(o.server_pid) + ") has exited");
    }
    open_server_queue(o);
    wire::HelloMsg hello;
    hello.pid = ::getpid();
    hello.nonce = nonce_;
    if (const SendResult r = send_waiting(wire::kHello, hello, {}, o.deadline);
        r != SendResult::kSent) {
      throw ConnectError(
          r == SendResult::kFull ? ConnectError::Kind::kTimeout : ConnectError::Kind::kNoServer,
          "cannot put a hello into the server queue");
    }
    // The server answers by creating our queue under the key of our nonce.
    const key_t key = wire::client_key(nonce_);
    auto step = std::chrono::microseconds(50);
    for (;;) {
      queue_ = ::msgget(key, 0);
      if (queue_ >= 0) break;
      if (errno != ENOENT) throw_system_error("msgget", "client queue");
      wait_a_little(step, o.deadline, "the server did not answer the hello");
    }
    msqid_ds ds{};
    if (!stat_queue(queue_, ds) || !is_private_queue(ds)) {
      throw ConnectError(ConnectError::Kind::kOther,
                         "the queue answering our hello is not a private queue of ours");
    }
    wire::Buffer b;
    for (;;) {
      const ssize_t n = retry_eintr([&] {
        return ::msgrcv(queue_, &b, sizeof b.text, wire::kWelcome, IPC_NOWAIT | MSG_NOERROR);
      });
      if (n >= 0) {
        wire::WelcomeMsg w;
        if (static_cast<std::size_t>(n) == sizeof w) {
          std::memcpy(&w, b.text, sizeof w);
          if (w.magic == wire::kMagic && w.version == wire::kVersion && w.nonce == nonce_) {
            client_ = w.client;
            token_ = w.token;
            break;
          }
        }
        continue;  // not our welcome: ignore it
      }
      if (errno != ENOMSG)
        throw ConnectError(ConnectError::Kind::kOther, "the server removed our queue");
      wait_a_little(step, o.deadline, "the server did not send a welcome");
    }
    if (send_up(wire::UpKind::kReady, {}, o.deadline) != SendResult::kSent) {
      throw ConnectError(ConnectError::Kind::kOther, "cannot finish the handshake");
    }
    bell_.emplace(queue_, random_nonce("msgq"));
    alarm_ = std::make_unique<Alarm>([this] { bell_->ring(); }, server_pidfd_.get(),
                                     [this] {
                                       server_dead_ = true;
                                       bell_->ring();
                                     });
  }

  ~Client() override {
    alarm_.reset();
    if (!closed_) {
      // Without it the server would take us for connected until this process exits. A full
      // server queue empties fast unless the server is stuck: wait a little, not forever.
      send_up(wire::UpKind::kBye, {}, deadline_after(1s));
    }
  }

  SendResult send(std::span<const std::byte> frame, Deadline deadline) override {
    check_frame_size(frame.size());
    if (closed_) return SendResult::kGone;
    return send_up(wire::UpKind::kData, frame, deadline);
  }

  // Blocks in msgrcv itself: a frame wakes this thread and no other. wake(), the deadline and
  // the server's death ring bell_ after setting what is looked at here, before each block.
  ReceiveResult receive(Frame& frame, Deadline deadline) override {
    for (;;) {
      if (closed_) return ReceiveResult::kClosed;
      if (woken_.exchange(false)) return ReceiveResult::kTimeout;
      // A dead server removes nothing, and sends nothing more: what it sent before dying is in
      // our queue, and once that is read the connection is over.
      const bool dead = server_dead_;
      const bool block = !dead && Clock::now() < deadline;
      if (block) alarm_->set(deadline);
      const ssize_t n = retry_eintr([&] {
        return ::msgrcv(queue_, buffer_.get(), kMaxFrameBytes + 1, 0,
                        MSG_NOERROR | (block ? 0 : IPC_NOWAIT));
      });
      if (n < 0) {
        if (errno == ENOMSG && !dead) return ReceiveResult::kTimeout;
        closed_ = true;  // EIDRM: the server removed our queue, the end of the connection
        continue;
      }
      if (buffer_->mtype == wire::kData && n >= 1 && n <= static_cast<ssize_t>(kMaxFrameBytes)) {
        frame.assign(buffer_->text, buffer_->text + n);
        return ReceiveResult::kFrame;
      }
      if (buffer_->mtype == wire::kWake) {
        bell_->take({buffer_->text, static_cast<std::size_t>(n)});  // ours or not: look again
      }
      // Anything else is nothing the server sends: ignore it.
    }
  }

  bool server_alive() override { return !server_dead_ && !pidfd_exited(server_pidfd_.get()); }

  void wake() override {
    woken_ = true;
    bell_->ring();
  }

 private:
  void open_server_queue(const ConnectOptions& o) {
    int project = 0, queue = -1;
    key_t key = 0;
    try {
      project = o.objects.at("project").get<int>();
      queue = o.objects.at("queue").get<int>();
      key = o.objects.at("key").get<key_t>();
    } catch (const nlohmann::json::exception& e) {
      throw ConnectError(ConnectError::Kind::kOther,
                         std::string("instance.json does not describe a msgq server: ") + e.what());
    }
    const fs::path key_path = o.dir / kKeyFile;
    const key_t derived = ::ftok(key_path.c_str(), project);
    if (derived == -1) {
      throw ConnectError(ConnectError::Kind::kNoServer,
                         "ftok " + key_path.string() + ": " + std::strerror(errno));
    }
    server_queue_ = ::msgget(key, 0);
    if (derived != key || server_queue_ != queue) {
      throw ConnectError(
          server_queue_ < 0 ? ConnectError::Kind::kNoServer : ConnectError::Kind::kOther,
          "the server queue of " + key_path.string() + " is not the one instance.json names");
    }
    msqid_ds ds{};
    if (!stat_queue(server_queue_, ds) || !is_private_queue(ds)) {
      throw ConnectError(ConnectError::Kind::kOther,
                         "the server queue is not a private queue of ours; refusing to use it");
    }
  }

  // Sleeps `step` (growing it), or throws ConnectError at `deadline` or when the server died.
  void wait_a_little(std::chrono::microseconds& step, Deadline deadline, const char* what) {
    if (Clock::now() >= deadline) throw ConnectError(ConnectError::Kind::kTimeout, what);
    pollfd p{server_pidfd_.get(), POLLIN, 0};
    if (poll_until(&p, 1, std::min(deadline, Clock::now() + step)) > 0) {
      throw ConnectError(ConnectError::Kind::kNoServer, "the server exited during the handshake");
    }
    step = std::min<std::chrono::microseconds>(step * 2, 5ms);
  }

  SendResult send_up(wire::UpKind kind, std::span<const std::byte> payload, Deadline deadline) {
    return send_waiting(wire::kUp, wire::UpHeader{client_, token_, kind, 0}, payload, deadline);
  }

  // Puts one message into the server queue. The queue says nothing when it has room again:
  // while it is full, look again after a growing pause (from 50 us to 5 ms), until `deadline`.
  template <typename Body>
  SendResult send_waiting(long mtype, const Body& body, std::span<const std::byte> payload,
                          Deadline deadline) {
    if (pidfd_exited(server_pidfd_.get())) return SendResult::kGone;
    auto step = std::chrono::microseconds(50);
    for (;;) {
      const int err = send_message(server_queue_, mtype, body, payload);
      if (err == 0) return SendResult::kSent;
      if (err != EAGAIN) return SendResult::kGone;  // EIDRM, EINVAL: the server queue is gone
      if (Clock::now() >= deadline) return SendResult::kFull;
      pollfd p{server_pidfd_.get(), POLLIN, 0};
      if (poll_until(&p, 1, std::min(deadline, Clock::now() + step)) > 0) {
        return SendResult::kGone;
      }
      step = std::min<std::chrono::microseconds>(step * 2, 5ms);
    }
  }

  UniqueFd server_pidfd_;
  const std::uint64_t nonce_;
  int server_queue_ = -1;
  int queue_ = -1;  // ours; created and removed by the server
  std::uint64_t client_ = 0;
  std::uint64_t token_ = 0;
  std::atomic<bool> server_dead_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> woken_{false};                                           // wake() was called
  std::unique_ptr<wire::Buffer> buffer_ = std::make_unique<wire::Buffer>();  // receive() only
  std::optional<QueueBell> bell_;  // wakes a receive() blocked in msgrcv on queue_
  std::unique_ptr<Alarm> alarm_;   // rings bell_ at receive()'s deadline or the server's death
};

}  // namespace

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return std::make_unique<Server>(options);
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  return std::make_unique<Client>(options);
}

std::vector<std::string> cleanup(const CleanupOptions& options) {
  return remove_recorded_queues(options.dir / kRecordFile);
}

}  // namespace chat::transport::msgq

// How the msgq endpoint works around what SysV queues lack:
//  - No readiness notification and no way to wait on a queue and anything else at once: a
//    receiving thread (server: the server queue; client: its own queue) sits in a blocking
//    msgrcv and hands messages over through a bounded buffer and an eventfd, which poll() and
//    receive() wait on together with wake() and the peer's pidfd. Stopping it: the server
//    removes its queue (EIDRM); a client puts a stop message into its own queue.
//  - No "writable again": send() uses IPC_NOWAIT and says kFull; while any client queue is full
//    (or a closed one still holds frames) the I/O thread looks at it with IPC_STAT every
//    kRecheck. An idle server never wakes up by itself.
//  - No end-of-file: a client's end is a goodbye message or its pidfd; the server's end is the
//    removal of the client's queue, kept until the client has read it (at most kLinger).
//  - Anybody of our uid may write anything into the server queue: every message from a
//    connected client carries its id and a secret token; what fails to say who sent it is
//    dropped, what a known client gets wrong disconnects that client.
#include "transport/msgq/msgq.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
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
// A closed client's queue is kept until the client has read it, at most this long.
constexpr auto kLinger = 1s;
// A dead client's death is reported after a marker that follows its last message through the
// server queue; if the queue stays full that long, it is reported without.
constexpr auto kMarkTimeout = 500ms;
// The receiving thread stops taking messages off the server queue while this much waits for
// the I/O thread; the queue then fills and senders wait.
constexpr std::size_t kInboxLimit = 1 << 20;
// What a client's receiving thread holds for receive(), on top of the 16 KiB of its queue.
constexpr std::size_t kClientBufferLimit = 64 << 10;
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

class Server final : public ServerEndpoint {
 public:
  explicit Server(const ListenOptions& o)
      : logger_(o.logger),
        warn_(o.logger, "msgq"),
        max_connections_(std::max<std::size_t>(o.max_clients * 2, o.max_clients + 64)),
        notify_fd_(make_eventfd("msgq server")),
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
    watcher_ = std::make_unique<PidWatcher>([this](std::uint64_t id) {
      {
        std::lock_guard lock(mutex_);
        deaths_.push_back(id);
      }
      signal_eventfd(notify_fd_.get());
    });
    receiver_ = std::thread([this, queue = queue_.id()] { receive_loop(queue); });
  }

  ~Server() override {
    watcher_.reset();  // no more death callbacks
    linger_all();
    {
      std::lock_guard lock(inbox_mutex_);
      stopping_ = true;
    }
    inbox_space_.notify_all();
    queue_.reset();  // a receiving thread blocked in msgrcv gets EIDRM
    receiver_.join();
    std::lock_guard lock(mutex_);
    connections_.clear();  // removes the client queues; then record_ and key_file_ go
    lingering_.clear();
  }

  void poll(std::vector<ServerEvent>& events, Deadline deadline) override {
    {
      std::lock_guard lock(inbox_mutex_);
      if (receiver_error_ != 0) {
        throw_system_error("msgrcv", "server queue " + std::to_string(queue_.id()),
                           receiver_error_);
      }
    }
    pollfd p{notify_fd_.get(), POLLIN, 0};
    poll_until(&p, 1, next_wakeup(deadline));
    drain_eventfd(notify_fd_.get());
    process_inbox(events);
    process_deaths(events);
    check_full(events);
    check_lingering();
    expire_handshakes();
    while (!waiting_hellos_.empty() && handshakes_.size() < kMaxPendingHellos) {
      answer_hello(waiting_hellos_.front());
      waiting_hellos_.pop_front();
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
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(id);
      if (it == connections_.end()) return SendResult::kGone;
      it->second->want_writable = true;
      full_.insert(id);
    }
    signal_eventfd(notify_fd_.get());  // the I/O thread starts re-checking
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
    signal_eventfd(notify_fd_.get());
  }

  void wake() override { signal_eventfd(notify_fd_.get()); }

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

  struct Inbound {
    long mtype = 0;
    bool oversize = false;  // longer than any valid message; cut
    std::vector<std::byte> text;
  };

  // The receiving thread: msgrcv blocks and cannot wait on anything else, so it has a thread of
  // its own feeding the I/O thread. `queue` is a copy: the destructor removes the queue (to end
  // a blocked msgrcv with EIDRM) while this thread may be about to use the id.
  void receive_loop(int queue) {
    auto b = std::make_unique<wire::Buffer>();
    for (;;) {
      {
        std::unique_lock lock(inbox_mutex_);
        inbox_space_.wait(lock, [&] { return inbox_bytes_ < kInboxLimit || stopping_; });
        if (stopping_) return;
      }
      // MSG_NOERROR: a message too long is cut and taken, rather than left to block the queue.
      const ssize_t n =
          retry_eintr([&] { return ::msgrcv(queue, b.get(), sizeof b->text, 0, MSG_NOERROR); });
      const int err = errno;
      std::lock_guard lock(inbox_mutex_);
      if (stopping_) return;
      if (n < 0) {
        receiver_error_ = err;  // the queue was removed under us: poll() reports it
        signal_eventfd(notify_fd_.get());
        return;
      }
      Inbound in;
      in.mtype = b->mtype;
      in.oversize = static_cast<std::size_t>(n) > wire::kMaxMessageBytes;
      in.text.assign(b->text, b->text + std::min<std::size_t>(n, wire::kMaxMessageBytes));
      inbox_bytes_ += in.text.size() + sizeof in;
      const bool was_empty = inbox_.empty();
      inbox_.push_back(std::move(in));
      if (was_empty) signal_eventfd(notify_fd_.get());
    }
  }

  Deadline next_wakeup(Deadline deadline) {
    {
      std::lock_guard lock(inbox_mutex_);
      if (!inbox_.empty()) return Clock::now();
    }
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

  void process_inbox(std::vector<ServerEvent>& events) {
    std::deque<Inbound> batch;
    {
      std::lock_guard lock(inbox_mutex_);
      batch.swap(inbox_);
      inbox_bytes_ = 0;
    }
    inbox_space_.notify_all();
    for (const Inbound& m : batch) {
      if (m.mtype == wire::kUp) {
        handle_up(m, events);
      } else if (m.mtype == wire::kHello) {
        wire::HelloMsg h;
        if (m.oversize || m.text.size() != sizeof h) {
          warn_("a hello of " + std::to_string(m.text.size()) + " bytes (not " +
                std::to_string(sizeof h) + "); dropped");
          continue;
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
      } else {
        warn_("a message of unknown type " + std::to_string(m.mtype) + " (" +
              std::to_string(m.text.size()) + " bytes) in the server queue; dropped");
      }
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

  const Logger* logger_;
  WarnLimiter warn_;  // I/O thread only
  std::size_t max_connections_;
  UniqueFd notify_fd_;  // eventfd: wake(), new messages, deaths, a send() that found a queue full
  OwnedFile key_file_;
  QueueRecord record_;
  OwnedQueue queue_;
  int project_ = 0;
  const std::uint64_t secret_;  // authenticates our own markers in the server queue

  // Owned by the I/O thread.
  std::map<ClientId, Deadline> handshakes_;    // pending clients and their deadlines
  std::map<ClientId, Deadline> unmarked_;      // dead clients whose marker is not sent yet
  std::deque<wire::HelloMsg> waiting_hellos_;  // while kMaxPendingHellos are in progress
  ClientId next_id_ = kFirstClientId;

  std::mutex mutex_;  // guards connections_ (and each Conn's flags), full_, lingering_, deaths_
  std::unordered_map<ClientId, std::shared_ptr<Conn>> connections_;  // pending ones too
  std::unordered_set<ClientId> full_;                                // want_writable
  std::vector<Lingering> lingering_;
  std::vector<ClientId> deaths_;

  std::mutex inbox_mutex_;  // guards the receiving thread's hand-over below
  std::condition_variable inbox_space_;
  std::deque<Inbound> inbox_;
  std::size_t inbox_bytes_ = 0;
  bool stopping_ = false;
  int receiver_error_ = 0;

  std::unique_ptr<PidWatcher> watcher_;
  std::thread receiver_;
};

class Client final : public ClientConnection {
 public:
  explicit Client(const ConnectOptions& o)
      : wake_fd_(make_eventfd("msgq client")),
        data_fd_(make_eventfd("msgq client")),
        server_pidfd_(open_pidfd(o.server_pid)),
        nonce_(random_nonce("msgq")) {
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
    receiver_ = std::thread([this] { receive_loop(); });
  }

  ~Client() override {
    if (!closed_) {
      // Without it the server would take us for connected until this process exits. A full
      // server queue empties fast unless the server is stuck: wait a little, not forever.
      send_up(wire::UpKind::kBye, {}, deadline_after(1s));
    }
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    space_.notify_all();
    // The receiving thread may be blocked in msgrcv: a stop message ends that. A full queue
    // means it is not blocked and will see stopping_; try again until it has.
    while (!receiver_done_ && !post_stop()) std::this_thread::sleep_for(1ms);
    receiver_.join();
  }

  SendResult send(std::span<const std::byte> frame, Deadline deadline) override {
    check_frame_size(frame.size());
    if (closed_) return SendResult::kGone;
    return send_up(wire::UpKind::kData, frame, deadline);
  }

  ReceiveResult receive(Frame& frame, Deadline deadline) override {
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (!frames_.empty()) {
          frame = std::move(frames_.front());
          frames_.pop_front();
          buffered_ -= frame.size();
          space_.notify_one();
          return ReceiveResult::kFrame;
        }
        if (closed_) return ReceiveResult::kClosed;
      }
      // A dead server removes nothing. What it sent before dying is in our queue: a stop
      // message behind it ends the receiving thread after it has delivered all of it.
      if (server_dead_ && !stop_posted_) stop_posted_ = post_stop();
      const bool awaiting_stop = server_dead_ && !stop_posted_;
      pollfd p[3] = {{data_fd_.get(), POLLIN, 0},
                     {wake_fd_.get(), POLLIN, 0},
                     {server_pidfd_.get(), POLLIN, 0}};
      const int r = poll_until(p, server_dead_ ? 2 : 3,
                               awaiting_stop ? std::min(deadline, deadline_after(1ms)) : deadline);
      if (p[1].revents != 0) {
        drain_eventfd(wake_fd_.get());
        return ReceiveResult::kTimeout;
      }
      if (p[0].revents != 0) drain_eventfd(data_fd_.get());
      if (!server_dead_ && p[2].revents != 0) server_dead_ = true;
      if (r == 0 && Clock::now() >= deadline) return ReceiveResult::kTimeout;
    }
  }

  bool server_alive() override { return !server_dead_ && !pidfd_exited(server_pidfd_.get()); }

  void wake() override { signal_eventfd(wake_fd_.get()); }

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

  // Puts a stop message into our own queue; false if it is full.
  bool post_stop() {
    const int err = send_message(queue_, wire::kStop, wire::StopMsg{nonce_});
    return err != EAGAIN;  // sent, or the queue is gone and the thread sees that
  }

  // The receiving thread: msgrcv blocks and cannot wait on anything else.
  void receive_loop() {
    auto b = std::make_unique<wire::Buffer>();
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        space_.wait(lock, [&] { return buffered_ < kClientBufferLimit || stopping_; });
        if (stopping_) break;
      }
      const ssize_t n = retry_eintr(
          [&] { return ::msgrcv(queue_, b.get(), kMaxFrameBytes + 1, 0, MSG_NOERROR); });
      std::lock_guard lock(mutex_);
      if (stopping_) break;
      if (n < 0) {
        closed_ = true;  // EIDRM: the server removed our queue, the end of the connection
      } else if (b->mtype == wire::kStop) {
        wire::StopMsg s;
        if (static_cast<std::size_t>(n) == sizeof s) std::memcpy(&s, b->text, sizeof s);
        if (static_cast<std::size_t>(n) != sizeof s || s.nonce != nonce_) continue;
        closed_ = true;  // the server died and everything before this has been delivered
      } else if (b->mtype == wire::kData && n >= 1 && n <= static_cast<ssize_t>(kMaxFrameBytes)) {
        frames_.emplace_back(b->text, b->text + n);
        buffered_ += static_cast<std::size_t>(n);
        if (frames_.size() == 1) signal_eventfd(data_fd_.get());
        continue;
      } else {
        continue;  // not a frame: nothing the server sends; ignore it
      }
      signal_eventfd(data_fd_.get());
      break;
    }
    receiver_done_ = true;
  }

  UniqueFd wake_fd_;
  UniqueFd data_fd_;  // eventfd: the receiving thread has delivered something
  UniqueFd server_pidfd_;
  const std::uint64_t nonce_;
  int server_queue_ = -1;
  int queue_ = -1;  // ours; created and removed by the server
  std::uint64_t client_ = 0;
  std::uint64_t token_ = 0;
  std::atomic<bool> server_dead_{false};
  std::atomic<bool> receiver_done_{false};
  bool stop_posted_ = false;  // receive() only

  std::mutex mutex_;  // guards the hand-over from the receiving thread
  std::condition_variable space_;
  std::deque<Frame> frames_;
  std::size_t buffered_ = 0;
  std::atomic<bool> closed_{false};
  bool stopping_ = false;
  std::thread receiver_;
};

}  // namespace

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return std::make_unique<Server>(options);
}

std::unique_ptr<ClientConnection> connect(const ConnectOptions& options) {
  return std::make_unique<Client>(options);
}

std::vector<std::string> cleanup(const CleanupOptions& options) {
  return remove_recorded_queues(options.dir / kRecordFile);
}

}  // namespace chat::transport::msgq

// The msgq server endpoint. How it works around what SysV queues lack:
//  - Clients arrive through the door. Each admitted client gets two queues of its own (wire.hpp)
//    handed to its account alone: no queue is shared, so a client can fill, garble or remove
//    only its own, and nobody can send as somebody else: which queue a message came from says
//    who sent it.
//  - No readiness notification: the I/O thread sleeps in epoll over the door, one bell eventfd
//    per client (bell.hpp), the clients' pidfds, their door connections (kept open: a hang-up
//    is a client gone) and an eventfd of its own (wake(), full queues). A client msgsnd()s to
//    its up queue, then rings its bell if the server said it sleeps; before sleeping the server
//    says so, then looks into every up queue once more (IPC_NOWAIT), so nothing published before
//    the flag is missed. A rung client's queue is drained with IPC_NOWAIT, kMaxPerClient
//    messages a turn, so one chatty client cannot hold up the others.
//  - No "writable again": send() uses IPC_NOWAIT and says kFull; while any down queue is full
//    (or a closed one still holds frames) the I/O thread looks at it every kRecheck with
//    IPC_STAT. An idle server sleeps until its caller's deadline.
//  - No end-of-file: a client's end is a goodbye in its up queue, the hang-up of its door
//    connection or its pidfd; what it sent before is delivered first. The server's end is the
//    removal of the client's down queue, kept until the client has read it (at most kLinger).
//  - A failing queue (removed, or closed to us with IPC_SET by its owner) disconnects that
//    client as malformed; nothing a client does to its queues reaches anybody else.
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "common/log.hpp"
#include "transport/bell.hpp"
#include "transport/door.hpp"
#include "transport/msgq/msgq.hpp"
#include "transport/msgq/stream.hpp"
#include "transport/msgq/sysv_queue.hpp"
#include "transport/msgq/wire.hpp"
#include "transport/pid_watch.hpp"
#include "transport/warn_limiter.hpp"

namespace chat::transport::msgq {
namespace {

using namespace std::chrono_literals;
using Gone = ServerEvent::Gone;

constexpr char kRecordFile[] = "msgq.queues";
// While a down queue is full, or a closed one still holds frames, the server looks again this
// often. Only then: an idle server sleeps.
constexpr auto kRecheck = 2ms;
// Messages one poll() takes off the up queues at most before it reports what it has, and off
// one client's queue at most per turn.
constexpr std::size_t kMaxBatch = 512;
constexpr std::size_t kMaxPerClient = 64;
// A closed client's down queue is kept until the client has read it, at most this long.
constexpr auto kLinger = 1s;
// A dead client's up queue is drained before its death is reported; whoever of its account
// keeps filling it gets this long, then the death is reported anyway.
constexpr auto kDrainDead = 500ms;
constexpr std::size_t kRecordCompactLines = 4096;
constexpr ClientId kFirstClientId = 1;
constexpr int kMaxEpollEvents = 64;
// A door that failed (out of descriptors) is left alone this long.
constexpr auto kDoorPause = 10ms;

// epoll data: a client id shifted left by two, and what of it is ready in the low bits.
enum Source : std::uint64_t { kOwn = 0, kBell = 1, kPid = 2, kSocket = 3 };
constexpr std::uint64_t kDoorData = (0 << 2) | kOwn;
constexpr std::uint64_t kWakeData = (1 << 2) | kOwn;

class Server final : public ServerEndpoint {
 public:
  explicit Server(const ListenOptions& o)
      : warn_(o.logger, "msgq"),
        instance_(o.instance),
        max_clients_(o.max_clients),
        record_(QueueRecord::create(o.dir / kRecordFile)),
        epoll_(::epoll_create1(EPOLL_CLOEXEC)),
        wake_(make_eventfd("msgq server")),
        door_(o.dir, o.access, o.logger) {
    if (!epoll_) throw_system_error("epoll_create1", "msgq server");
    watch(door_.fd(), EPOLLIN, kDoorData);
    watch(wake_.get(), EPOLLIN, kWakeData);
  }

  ~Server() override {
    linger_all();
    std::lock_guard lock(mutex_);
    connections_.clear();  // removes the queues; then record_ goes
    lingering_.clear();
  }

  void poll(std::vector<ServerEvent>& events, Deadline deadline) override {
    for (;;) {
      const bool woken = woken_.exchange(false);
      resume_door();
      report_broken(events);
      check_full(events);
      check_lingering();
      drain_dying(events);
      drain_pending(events);
      if (woken || !events.empty() || Clock::now() >= deadline) return;
      const Deadline until = next_wakeup(deadline);
      // Dekker with the clients' ring(): the flag first, then every queue once more.
      bell_.sleeping();
      drain_all(events);
      if (!events.empty()) {
        bell_.awake();
        return;
      }
      wait(until, events);
      bell_.awake();
    }
  }

  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    check_frame_size(frame.size());
    int queue;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(id);
      if (it == connections_.end() || it->second->gone_reported) return SendResult::kGone;
      queue = it->second->down.id();
    }
    const int err = stream::put(queue, wire::kData, frame);
    if (err == 0) return SendResult::kSent;
    std::lock_guard lock(mutex_);
    const auto it = connections_.find(id);
    if (it == connections_.end()) return SendResult::kGone;
    if (err != EAGAIN) {
      // EIDRM, EINVAL, EACCES: its owner removed the queue or closed it to us.
      broken_.emplace_back(id, err);
      signal_eventfd(wake_.get());
      return SendResult::kGone;
    }
    it->second->want_writable = true;
    if (full_.insert(id).second && full_.size() == 1) signal_eventfd(wake_.get());
    return SendResult::kFull;
  }

  void close(ClientId id) override {
    std::shared_ptr<Conn> c;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(id);
      if (it == connections_.end()) return;
      c = std::move(it->second);
      connections_.erase(it);
      full_.erase(id);
    }
    // Its descriptors are shared with the client (or, for the pidfd, may stay readable): out of
    // the epoll set explicitly, or their events would keep coming.
    unwatch(c->bell.get());
    unwatch(c->pidfd.get());
    unwatch(c->socket.get());
    msqid_ds ds{};
    std::lock_guard lock(mutex_);
    if (c->bye || c->died || !stat_queue(c->down.id(), ds) || ds.msg_qnum == 0) {
      return;  // nobody will read more: `c` takes its queues with it
    }
    // The client still has frames to read. Its down queue's removal is what it sees as the
    // end of the connection, so that queue stays until it is empty (or kLinger has passed).
    lingering_.push_back({std::move(c->down), deadline_after(kLinger)});
    signal_eventfd(wake_.get());  // the I/O thread starts re-checking
  }

  void wake() override {
    woken_ = true;
    signal_eventfd(wake_.get());
  }

  std::size_t buffered(ClientId id) override {
    int queue;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(id);
      if (it == connections_.end()) return 0;
      queue = it->second->down.id();
    }
    msqid_ds ds{};
    return stat_queue(queue, ds) ? static_cast<std::size_t>(ds.msg_cbytes) : 0;
  }

  nlohmann::json objects() const override {
    // instance.json is written once, before any client: the record is what lists the queues
    // made since. The live ones are listed here too, for whoever asks later.
    nlohmann::json queues = nlohmann::json::array();
    std::lock_guard lock(mutex_);
    for (const auto& [id, c] : connections_) {
      for (const OwnedQueue* q : {&c->up, &c->down}) {
        if (*q) queues.push_back(entry_json(*q));
      }
    }
    for (const auto& l : lingering_) queues.push_back(entry_json(l.queue));
    return {{"record", record_.path().string()}, {"queues", std::move(queues)}};
  }

 private:
  struct Conn {
    ClientId id = 0;
    pid_t pid = 0;
    uid_t uid = 0;
    OwnedQueue up;
    OwnedQueue down;
    UniqueFd socket;  // the door connection: its hang-up is the client gone
    UniqueFd pidfd;
    UniqueFd bell;  // our copy of the client's bell eventfd
    // Guarded by mutex_.
    bool gone_reported = false;
    bool bye = false;
    bool died = false;
    bool want_writable = false;
  };

  struct Lingering {
    OwnedQueue queue;
    Deadline until;
  };

  // A client whose end was seen (pidfd, hang-up): its up queue is drained first.
  struct Ending {
    Deadline until;  // report it then, whatever is still in its queue
    bool hung_up;    // its door connection closed; maybe a death, if the pidfd says so
  };

  static nlohmann::json entry_json(const OwnedQueue& q) {
    return {{"id", q.id()},
            {"key", q.key()},
            {"ctime", static_cast<long long>(q.ctime())},
            {"owner", q.owner()}};
  }

  void watch(int fd, std::uint32_t what, std::uint64_t data) {
    epoll_event ev{};
    ev.events = what;
    ev.data.u64 = data;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw_system_error("epoll_ctl", "msgq server");
    }
  }

  void unwatch(int fd) {
    if (fd >= 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);  // ENOENT: done already
  }

  std::shared_ptr<Conn> find(ClientId id) {
    std::lock_guard lock(mutex_);
    const auto it = connections_.find(id);
    return it == connections_.end() ? nullptr : it->second;
  }

  bool reported(const Conn& c) {
    std::lock_guard lock(mutex_);
    return c.gone_reported;
  }

  Deadline next_wakeup(Deadline deadline) {
    if (!pending_.empty()) return Clock::now();  // a client had more than one turn's worth
    if (door_paused_until_) deadline = std::min(deadline, *door_paused_until_);
    std::lock_guard lock(mutex_);
    if (!ending_.empty() || !full_.empty() || !lingering_.empty() || !broken_.empty()) {
      return std::min(deadline, deadline_after(kRecheck));
    }
    return deadline;
  }

  // Sleeps in epoll until `until` and takes note of what woke it.
  void wait(Deadline until, std::vector<ServerEvent>& events) {
    epoll_event ready[kMaxEpollEvents];
    const int timeout = until == kNoDeadline ? -1 : poll_timeout_ms(until);
    const int n =
        retry_eintr([&] { return ::epoll_wait(epoll_.get(), ready, kMaxEpollEvents, timeout); });
    if (n < 0) throw_system_error("epoll_wait", "msgq server");
    for (int i = 0; i < n; ++i) {
      const std::uint64_t data = ready[i].data.u64;
      if (data == kDoorData) {
        admit_waiting(events);
      } else if (data == kWakeData) {
        drain_eventfd(wake_.get());
      } else {
        on_client_ready(data >> 2, static_cast<Source>(data & 3));
      }
    }
  }

  void on_client_ready(ClientId id, Source source) {
    const std::shared_ptr<Conn> c = find(id);
    if (!c) return;  // closed since
    switch (source) {
      case kBell:
        drain_eventfd(c->bell.get());
        if (pending_set_.insert(id).second) pending_.push_back(id);
        break;
      case kPid:
        unwatch(c->pidfd.get());  // stays readable
        ending_[id] = {deadline_after(kDrainDead), false};
        break;
      case kSocket:
        unwatch(c->socket.get());  // stays readable
        // A dying process closes its files a moment before its pidfd says so.
        if (ending_.count(id) == 0) ending_[id] = {deadline_after(kDeathSettle), true};
        break;
      default:
        break;
    }
  }

  // Admits every client waiting at the door.
  void admit_waiting(std::vector<ServerEvent>& events) {
    try {
      for (;;) {
        // Door::accept() must find a descriptor free: accept4 takes one before it looks for a
        // waiting client, and at the limit Door::accept() would retry for good.
        reserve_.reset();
        std::optional<door::Guest> guest = door_.accept();
        reserve_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!guest) break;
        if (!reserve_) {
          door::refuse(guest->socket.get(), "server_busy", "the server is out of file descriptors");
          warn_("refused a client: out of file descriptors");
          guest.reset();
          reserve_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
          continue;
        }
        admit(std::move(*guest), events);
      }
    } catch (const std::system_error& e) {
      // Out of descriptors with none to spare, say: no reason to lose what this poll() has
      // gathered (frames taken off queues among it), nor to spin on a door that stays
      // readable. It is looked at again in a while.
      warn_(std::string("the door: ") + e.what());
      unwatch(door_.fd());
      door_paused_until_ = deadline_after(kDoorPause);
    }
  }

  void resume_door() {
    if (door_paused_until_ && Clock::now() >= *door_paused_until_) {
      watch(door_.fd(), EPOLLIN, kDoorData);
      door_paused_until_.reset();
    }
  }

  void admit(door::Guest g, std::vector<ServerEvent>& events) {
    if (!g.pidfd) return;  // gone already; its connection closes with `g`
    {
      std::lock_guard lock(mutex_);
      if (connections_.size() >= max_clients_) {
        const std::string n = std::to_string(max_clients_);
        door::refuse(g.socket.get(), "server_full",
                     "the server is full: " + n + " of " + n + " clients connected");
        return;
      }
    }
    auto c = std::make_shared<Conn>();
    c->id = next_id_++;
    c->pid = g.peer.pid;
    c->uid = g.peer.uid;
    const std::string who = "client " + std::to_string(c->id) + " (pid " + std::to_string(c->pid) +
                            ", uid " + std::to_string(c->uid) + ")";
    door::Grant grant;
    try {
      // Recorded before anybody can learn of them, so that a crash leaves nothing unlisted.
      c->up = OwnedQueue::create_for(c->uid, "up queue of " + who);
      record(c->up);
      c->down = OwnedQueue::create_for(c->uid, "down queue of " + who);
      record(c->down);
      c->bell = make_bell_eventfd();
      grant.transport = "msgq";
      grant.instance = instance_;
      grant.channel = {{wire::kChannelVersion, wire::kVersion},
                       {wire::kChannelUp, c->up.id()},
                       {wire::kChannelDown, c->down.id()}};
      grant.fds = {bell_.page_fd(), c->bell.get()};
    } catch (const std::system_error& e) {
      warn_("cannot make a channel for " + who + ": " + e.what());
      door::refuse(g.socket.get(), "server_busy", std::string("no channel: ") + e.what());
      return;
    }
    c->socket = std::move(g.socket);
    c->pidfd = std::move(g.pidfd);
    {
      std::lock_guard lock(mutex_);
      connections_.emplace(c->id, c);
    }
    try {
      watch(c->bell.get(), EPOLLIN, (c->id << 2) | kBell);
      watch(c->pidfd.get(), EPOLLIN, (c->id << 2) | kPid);
      watch(c->socket.get(), EPOLLRDHUP, (c->id << 2) | kSocket);
    } catch (const std::system_error& e) {
      warn_("cannot watch " + who + ": " + e.what());
      door::refuse(c->socket.get(), "server_busy", e.what());
      return forget(*c);
    }
    if (!door::grant(c->socket.get(), grant)) return forget(*c);  // it left at the door
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kConnected;
    ev.client = c->id;
    ev.pid = c->pid;
    ev.uid = c->uid;
    events.push_back(std::move(ev));
  }

  // Drops a client that was never reported.
  void forget(Conn& c) {
    unwatch(c.bell.get());
    unwatch(c.pidfd.get());
    unwatch(c.socket.get());
    std::lock_guard lock(mutex_);
    connections_.erase(c.id);
  }

  // Takes up to `limit` messages off c's up queue and reports them; how many it took.
  std::size_t drain(Conn& c, std::vector<ServerEvent>& events, std::size_t limit) {
    std::size_t n = 0;
    while (n < limit && !reported(c)) {
      const ssize_t got = stream::take(c.up.id(), *buffer_, false);
      if (got < 0) {
        if (errno != ENOMSG) {
          // EIDRM, EINVAL, EACCES: its owner removed it or closed it to us.
          report_gone(c, Gone::kMalformed,
                      std::string("its up queue was removed or closed to the server (") +
                          std::strerror(errno) + ")",
                      events);
        }
        return n;
      }
      ++n;
      const stream::Up up = stream::parse_up(*buffer_, static_cast<std::size_t>(got));
      switch (up.kind) {
        case stream::Up::Kind::kFrame: {
          ServerEvent ev;
          ev.kind = ServerEvent::Kind::kFrame;
          ev.client = c.id;
          ev.frame.assign(up.frame.begin(), up.frame.end());
          events.push_back(std::move(ev));
          break;
        }
        case stream::Up::Kind::kBye: {
          {
            std::lock_guard lock(mutex_);
            c.bye = true;
          }
          report_gone(c, Gone::kClosed, "", events);
          return n;
        }
        case stream::Up::Kind::kBad:
          report_gone(c, Gone::kMalformed, up.error, events);
          return n;
      }
    }
    return n;
  }

  // The clients that rang, each kMaxPerClient messages a turn; who may have more stays.
  void drain_pending(std::vector<ServerEvent>& events) {
    std::size_t total = 0;
    for (std::size_t turns = pending_.size(); turns > 0 && total < kMaxBatch; --turns) {
      const ClientId id = pending_.front();
      pending_.pop_front();
      const std::shared_ptr<Conn> c = find(id);
      const std::size_t n = c ? drain(*c, events, kMaxPerClient) : 0;
      total += n;
      if (n == kMaxPerClient) {
        pending_.push_back(id);
      } else {
        pending_set_.erase(id);
      }
    }
  }

  // The re-check before sleeping: every up queue, as a client may have published before it
  // saw the flag set.
  void drain_all(std::vector<ServerEvent>& events) {
    std::vector<std::shared_ptr<Conn>> all;
    {
      std::lock_guard lock(mutex_);
      all.reserve(connections_.size());
      for (const auto& [id, c] : connections_) {
        if (!c->gone_reported) all.push_back(c);
      }
    }
    for (const auto& c : all) {
      if (drain(*c, events, kMaxPerClient) == kMaxPerClient && pending_set_.insert(c->id).second) {
        pending_.push_back(c->id);
      }
    }
  }

  // Clients whose end was seen: what they sent before is delivered, then the end reported.
  void drain_dying(std::vector<ServerEvent>& events) {
    const auto now = Clock::now();
    for (auto it = ending_.begin(); it != ending_.end();) {
      const std::shared_ptr<Conn> c = find(it->first);
      if (!c || reported(*c)) {
        it = ending_.erase(it);
        continue;
      }
      const bool empty = drain(*c, events, kMaxPerClient) < kMaxPerClient;
      if (reported(*c)) {
        it = ending_.erase(it);
        continue;
      }
      const bool dead = !it->second.hung_up || pidfd_exited(c->pidfd.get());
      if ((empty && dead) || now >= it->second.until) {
        report_gone(*c, dead ? Gone::kDied : Gone::kClosed, "", events);
        it = ending_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Reports the clients whose down queue failed in send().
  void report_broken(std::vector<ServerEvent>& events) {
    std::vector<std::pair<ClientId, int>> broken;
    {
      std::lock_guard lock(mutex_);
      broken.swap(broken_);
    }
    for (const auto& [id, err] : broken) {
      if (const auto c = find(id)) {
        report_gone(*c, Gone::kMalformed,
                    std::string("its down queue was removed or closed to the server (") +
                        std::strerror(err) + ")",
                    events);
      }
    }
  }

  // Reports the end of a client once; its queues stay until close().
  void report_gone(Conn& c, Gone how, std::string detail, std::vector<ServerEvent>& events) {
    {
      std::lock_guard lock(mutex_);
      if (c.gone_reported) return;
      c.gone_reported = true;
      if (how == Gone::kDied) c.died = true;
    }
    if (how == Gone::kMalformed) warn_("client " + std::to_string(c.id) + ": " + detail);
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kDisconnected;
    ev.client = c.id;
    ev.gone = how;
    ev.detail = std::move(detail);
    events.push_back(std::move(ev));
  }

  // Reports kWritable for full down queues that have room again.
  void check_full(std::vector<ServerEvent>& events) {
    std::vector<std::pair<ClientId, int>> full;
    {
      std::lock_guard lock(mutex_);
      for (const ClientId id : full_) {
        const auto it = connections_.find(id);
        if (it != connections_.end()) full.emplace_back(id, it->second->down.id());
      }
    }
    for (const auto& [id, queue] : full) {
      // At most half full, with room for a frame of any size: a client that shrank its queue
      // (msg_qbytes) below that stays full and is evicted, rather than made writable and
      // full again in a loop.
      msqid_ds ds{};
      if (stat_queue(queue, ds) &&
          (ds.msg_cbytes > ds.msg_qbytes / 2 || ds.msg_qbytes - ds.msg_cbytes < kMaxFrameBytes)) {
        continue;
      }
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

  // Removes the down queues of closed clients once they are empty (or have lingered enough).
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
          if (!c->died && !c->bye && stat_queue(c->down.id(), ds) && ds.msg_qnum > 0) {
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
        record_.lines() >= 8 * (connections_.size() + lingering_.size() + 1)) {
      std::vector<const OwnedQueue*> live;
      for (const auto& [id, c] : connections_) {
        for (const OwnedQueue* q : {&c->up, &c->down}) {
          if (*q) live.push_back(q);
        }
      }
      for (const auto& l : lingering_) live.push_back(&l.queue);
      record_.rewrite(live);
    }
    record_.add(queue);
  }

  WarnLimiter warn_;  // I/O thread only
  const std::string instance_;
  const std::size_t max_clients_;
  QueueRecord record_;  // guarded by mutex_; destroyed after every queue it lists
  ServerBell bell_;
  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd: wake(), or something for the I/O thread to re-check
  door::Door door_;
  UniqueFd reserve_{::open("/dev/null", O_RDONLY | O_CLOEXEC)};  // freed for door_.accept()

  // Owned by the I/O thread.
  std::unique_ptr<wire::Buffer> buffer_ = std::make_unique<wire::Buffer>();
  std::deque<ClientId> pending_;  // rang, or had more than one turn's worth
  std::unordered_set<ClientId> pending_set_;
  std::map<ClientId, Ending> ending_;
  std::optional<Deadline> door_paused_until_;
  ClientId next_id_ = kFirstClientId;

  // Guards connections_ (and each Conn's flags), full_, lingering_, broken_, record_.
  mutable std::mutex mutex_;
  std::unordered_map<ClientId, std::shared_ptr<Conn>> connections_;
  std::unordered_set<ClientId> full_;  // want_writable
  std::vector<Lingering> lingering_;
  std::vector<std::pair<ClientId, int>> broken_;  // send() found the down queue failing: errno

  std::atomic<bool> woken_{false};  // wake() was called
};

// The queues a dead server listed in its objects (instance.json), if any.
std::vector<std::string> remove_listed_queues(const nlohmann::json& objects) {
  std::vector<std::string> removed;
  if (!objects.is_object() || !objects.contains("queues") || !objects["queues"].is_array()) {
    return removed;
  }
  for (const auto& q : objects["queues"]) {
    try {
      QueueEntry e;
      e.id = q.at("id").get<int>();
      e.key = q.at("key").get<long long>();
      e.ctime = q.at("ctime").get<long long>();
      e.owner = q.at("owner").get<uid_t>();
      if (std::string line = remove_if_ours(e); !line.empty()) removed.push_back(std::move(line));
    } catch (const nlohmann::json::exception&) {
      continue;  // not an entry of ours
    }
  }
  return removed;
}

}  // namespace

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return std::make_unique<Server>(options);
}

std::vector<std::string> cleanup(const CleanupOptions& options) {
  std::vector<std::string> removed = remove_listed_queues(options.objects);
  for (auto& line : remove_recorded_queues(options.dir / kRecordFile)) {
    removed.push_back(std::move(line));
  }
  return removed;
}

}  // namespace chat::transport::msgq

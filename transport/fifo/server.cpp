#include "transport/fifo/server.hpp"

#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <optional>
#include <system_error>
#include <unordered_map>

#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "common/log.hpp"
#include "transport/door.hpp"
#include "transport/fifo/channel.hpp"
#include "transport/fifo/stream.hpp"
#include "transport/fifo/wire.hpp"
#include "transport/pid_watch.hpp"
#include "transport/warn_limiter.hpp"

namespace chat::transport::fifo {
namespace {

using Gone = ServerEvent::Gone;

// Per pipe, per direction. The kernel default is 16 pages; asking explicitly keeps the bound on
// machines with larger pages too. Either way far below kMaxTransportBufferBytes.
constexpr int kPipeBytes = 64 << 10;
constexpr std::size_t kReadChunk = 64 << 10;  // bytes read per pipe per poll(), for fairness
constexpr int kAdmitsPerPoll = 32;            // clients let in per poll(), for fairness too
// Connections beyond max_clients: chatd holds a client until it has told it "server full" in
// words, and a client that has just left until it has closed it.
constexpr std::size_t kSpareConnections = 8;
constexpr std::uint64_t kDoorKey = 0;
constexpr std::uint64_t kWakeKey = 1;
constexpr ClientId kFirstClientId = 1;  // epoll keys of clients are then >= 4

enum Slot : std::uint64_t { kUpSlot = 0, kDownSlot = 1, kPidSlot = 2 };
std::uint64_t key_of(ClientId id, Slot slot) {
  return (id << 2) | slot;
}

class Server final : public ServerEndpoint {
 public:
  explicit Server(const ListenOptions& o)
      : warn_(o.logger, "fifo"),
        dir_(o.dir),
        instance_(o.instance),
        max_connections_(o.max_clients + kSpareConnections),
        epoll_(::epoll_create1(EPOLL_CLOEXEC)),
        wake_fd_(make_eventfd("fifo server")),
        door_(o.dir, o.access, o.logger),
        io_buffer_(kReadChunk) {
    if (!epoll_) throw_system_error("epoll_create1", "fifo server");
    add(door_.fd(), kDoorKey, EPOLLIN);
    add(wake_fd_.get(), kWakeKey, EPOLLIN);
  }

  ~Server() override {
    std::unordered_map<ClientId, std::shared_ptr<Conn>> connected;
    {
      std::lock_guard lock(mutex_);
      connected.swap(connections_);
    }
    for (auto& [id, c] : connected) {
      std::lock_guard lock(c->mutex);
      release(*c);
    }
  }

  void poll(std::vector<ServerEvent>& events, Deadline deadline) override {
    epoll_event ready[64];
    const int n = retry_eintr(
        [&] { return ::epoll_wait(epoll_.get(), ready, 64, poll_timeout_ms(deadline)); });
    if (n < 0) throw_system_error("epoll_wait", "fifo server");
    for (int i = 0; i < n; ++i) {
      const std::uint64_t key = ready[i].data.u64;
      if (key == kDoorKey) {
        admit_waiting(events);
      } else if (key == kWakeKey) {
        drain_eventfd(wake_fd_.get());
      } else {
        dispatch(key >> 2, static_cast<Slot>(key & 3), events);
      }
    }
  }

  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    check_frame_size(frame.size());
    const std::shared_ptr<Conn> c = find(id);
    if (!c) return SendResult::kGone;
    std::lock_guard lock(c->mutex);
    if (c->closed) return SendResult::kGone;
    if (!c->tail.empty()) {  // the previous frame is not all in the pipe yet
      c->want_writable = true;
      watch_writable(*c);
      return SendResult::kFull;
    }
    const WireFrame w(wire::Kind::kData, frame);
    std::size_t written = 0;
    switch (write_now(c->down.get(), w.view(), written)) {
      case Flow::kDone:
        return SendResult::kSent;
      case Flow::kBlocked:
        if (written == 0) {
          c->want_writable = true;
          watch_writable(*c);
          return SendResult::kFull;
        }
        // Only a frame longer than PIPE_BUF (header included) is split, and only by a pipe that
        // is nearly full: keep the rest, finish it on EPOLLOUT. The frame counts as queued.
        c->tail.assign(w.bytes.begin() + static_cast<std::ptrdiff_t>(written),
                       w.bytes.begin() + static_cast<std::ptrdiff_t>(w.size));
        watch_writable(*c);
        return SendResult::kSent;
      case Flow::kBroken:
        break;
    }
    return SendResult::kGone;  // EPIPE: the client's reading end is gone
  }

  void close(ClientId id) override {
    std::shared_ptr<Conn> c;
    {
      std::lock_guard lock(mutex_);
      const auto it = connections_.find(id);
      if (it == connections_.end()) return;
      c = std::move(it->second);
      connections_.erase(it);
    }
    std::lock_guard lock(c->mutex);
    // One last try to finish a half-written frame, so the client does not see it truncated.
    if (!c->tail.empty() && c->down) write_pending(c->down.get(), c->tail);
    // Closing our writing end is what the client sees as end-of-file, after the frames
    // already in the pipe.
    release(*c);
  }

  std::size_t buffered(ClientId id) override {
    const std::shared_ptr<Conn> c = find(id);
    if (!c) return 0;
    std::lock_guard lock(c->mutex);
    if (c->closed) return 0;
    int bytes = 0;  // FIONREAD counts what is in the pipe from either end
    if (::ioctl(c->down.get(), FIONREAD, &bytes) != 0) bytes = 0;
    return static_cast<std::size_t>(bytes) + c->tail.size();
  }

  void wake() override { signal_eventfd(wake_fd_.get()); }

  // The door is the only name that lasts. A channel's FIFOs have names only while
  // make_channel() opens them; a server killed just then leaves them in the runtime dir.
  nlohmann::json objects() const override {
    return {{"door", door_.path().string()}, {"fifos", (dir_ / "fifo-*.{up,down}").string()}};
  }

 private:
  // One connected client, until close(). Known to the I/O thread, send() and close().
  struct Conn {
    ClientId id = 0;
    // Owned by the I/O thread.
    FrameReader reader;
    bool gone_reported = false;
    bool bye = false;

    std::mutex mutex;  // guards everything below: the descriptors are closed under it
    UniqueFd up;       // reading end of the client's up pipe
    UniqueFd down;     // writing end of its down pipe
    UniqueFd pidfd;
    std::vector<std::byte> tail;  // the unwritten rest of a frame partly written to `down`
    bool want_writable = false;   // a send() said kFull: report kWritable
    bool out_watched = false;     // `down` is in the epoll set for EPOLLOUT
    bool closed = false;
  };

  void add(int fd, std::uint64_t key, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = key;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw_system_error("epoll_ctl(ADD)", "fifo server");
    }
  }

  void forget_fd(int fd) {
    if (fd >= 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }

  // With c.mutex held.
  void watch_writable(Conn& c) {
    if (c.out_watched) return;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = key_of(c.id, kDownSlot);
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c.down.get(), &ev) == 0) c.out_watched = true;
  }

  // With c.mutex held: closes every descriptor.
  void release(Conn& c) {
    c.closed = true;
    forget_fd(c.up.get());
    forget_fd(c.pidfd.get());
    if (c.out_watched) forget_fd(c.down.get());
    c.out_watched = false;
    c.up.reset();
    c.down.reset();
    c.pidfd.reset();
    c.tail.clear();
  }

  std::shared_ptr<Conn> find(ClientId id) {
    std::lock_guard lock(mutex_);
    const auto it = connections_.find(id);
    return it == connections_.end() ? nullptr : it->second;
  }

  // Lets in the clients waiting at the door, a few at a time; the door stays readable for the
  // rest.
  void admit_waiting(std::vector<ServerEvent>& events) {
    for (int i = 0; i < kAdmitsPerPoll; ++i) {
      std::optional<door::Guest> guest;
      try {
        guest = door_.accept();
      } catch (const std::system_error& e) {
        return warn_(std::string("cannot accept at the door: ") + e.what());
      }
      if (!guest) return;
      admit(std::move(*guest), events);
    }
  }

  // Makes the guest's FIFO pair and hands it its two ends. Nothing the guest does here can
  // affect another client: a failure refuses or drops this guest alone.
  void admit(door::Guest guest, std::vector<ServerEvent>& events) {
    if (!guest.pidfd) return;  // it has exited at the door already: nobody to serve
    {
      std::lock_guard lock(mutex_);
      if (connections_.size() >= max_connections_) {
        const std::string n = std::to_string(max_connections_);
        door::refuse(guest.socket.get(), "server_full",
                     "the server is full: " + n + " of " + n + " clients connected");
        return;
      }
    }
    auto c = std::make_shared<Conn>();
    Channel ch;
    try {
      ch = make_channel(dir_, kPipeBytes);
      c->id = next_id_++;
      c->up = std::move(ch.up_read);
      c->down = std::move(ch.down_write);
      c->pidfd = std::move(guest.pidfd);
      add(c->up.get(), key_of(c->id, kUpSlot), EPOLLIN);
      add(c->pidfd.get(), key_of(c->id, kPidSlot), EPOLLIN);
    } catch (const std::system_error& e) {
      warn_("pid " + std::to_string(guest.peer.pid) + " of " + account_name(guest.peer.uid) +
            ": cannot make its channel: " + e.what());
      door::refuse(guest.socket.get(), "server_busy",
                   std::string("the server cannot make a channel: ") + e.what());
      std::lock_guard lock(c->mutex);
      release(*c);
      return;
    }
    door::Grant grant;
    grant.transport = "fifo";
    grant.instance = instance_;
    grant.channel = {{"version", wire::kVersion}, {"fds", {wire::kUp, wire::kDown}}};
    grant.fds = {ch.up_write.get(), ch.down_read.get()};
    if (!door::grant(guest.socket.get(), grant)) {
      std::lock_guard lock(c->mutex);  // it left at the door
      release(*c);
      return;
    }
    // Our copies of the client's ends close with `ch`: from now on the client's are the only
    // writer of `up` (its end-of-file is the client's hang-up) and the only reader of `down`
    // (a vanished reader shows as EPIPE). The door connection closes with `guest`: the pidfd
    // and the pipes tell everything it could.
    {
      std::lock_guard lock(mutex_);
      connections_.emplace(c->id, c);
    }
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kConnected;
    ev.client = c->id;
    ev.pid = guest.peer.pid;
    ev.uid = guest.peer.uid;
    events.push_back(std::move(ev));
  }

  void dispatch(ClientId id, Slot slot, std::vector<ServerEvent>& events) {
    const std::shared_ptr<Conn> c = find(id);
    if (!c || c->gone_reported) return;
    if (slot == kUpSlot) {
      serve_up(*c, events);
    } else if (slot == kDownSlot) {
      serve_down(*c, events);
    } else {
      // Everything a dead process wrote is in the pipe already: deliver it, then report.
      while (!c->gone_reported && serve_up(*c, events)) {
      }
      report_gone(*c, Gone::kDied, "", events);
    }
  }

  // Reads what the client wrote and turns it into events. True if the read stopped at the
  // per-poll limit with more perhaps waiting.
  bool serve_up(Conn& c, std::vector<ServerEvent>& events) {
    Fill got;
    {
      std::lock_guard lock(c.mutex);
      if (c.closed) return false;
      got = fill(c.up.get(), c.reader, io_buffer_, kReadChunk);
    }
    wire::Header header;
    std::string error;
    for (;;) {
      ServerEvent ev;
      const auto r = c.reader.next(header, ev.frame, error);
      if (r == FrameReader::Result::kNeedMore) break;
      if (r == FrameReader::Result::kMalformed) {
        report_gone(c, Gone::kMalformed, error, events);
        return false;
      }
      if (header.kind == wire::Kind::kBye) {
        c.bye = true;
        report_gone(c, Gone::kClosed, "", events);
        return false;
      }
      ev.kind = ServerEvent::Kind::kFrame;
      ev.client = c.id;
      events.push_back(std::move(ev));
    }
    if (got.end) {
      report_gone(c, Gone::kClosed, "", events);
      return false;
    }
    return got.bytes == kReadChunk;
  }

  // Finishes a half-written frame; reports kWritable once the pipe takes frames again.
  void serve_down(Conn& c, std::vector<ServerEvent>& events) {
    std::lock_guard lock(c.mutex);
    if (c.closed) return;
    if (!c.tail.empty()) {
      const Flow flow = write_pending(c.down.get(), c.tail);
      if (flow == Flow::kBlocked) return;  // still full: keep watching
      c.tail.clear();  // kBroken: the reader is gone; the next send() says kGone
    }
    forget_fd(c.down.get());
    c.out_watched = false;
    if (c.want_writable) {
      c.want_writable = false;
      ServerEvent ev;
      ev.kind = ServerEvent::Kind::kWritable;
      ev.client = c.id;
      events.push_back(std::move(ev));
    }
  }

  // Reports the end of a client once; it stays in connections_ until close().
  void report_gone(Conn& c, Gone how, std::string detail, std::vector<ServerEvent>& events) {
    if (c.gone_reported) return;
    c.gone_reported = true;
    {
      std::lock_guard lock(c.mutex);
      if (c.closed) return;  // the owner closed it meanwhile; it wants no event
      // A closed pipe stays readable (end-of-file) and a dead pidfd stays ready: stop watching.
      forget_fd(c.up.get());
      forget_fd(c.pidfd.get());
      if (how == Gone::kClosed && !c.bye) {
        // End-of-file without a goodbye: a hang-up, or a death whose pidfd is a moment behind.
        for (int i = 0; i < 20 && !pidfd_exited(c.pidfd.get()); ++i) ::usleep(500);
        if (pidfd_exited(c.pidfd.get())) how = Gone::kDied;
      }
    }
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kDisconnected;
    ev.client = c.id;
    ev.gone = how;
    ev.detail = std::move(detail);
    events.push_back(std::move(ev));
  }

  WarnLimiter warn_;
  std::filesystem::path dir_;
  std::string instance_;
  std::size_t max_connections_;
  UniqueFd epoll_;
  UniqueFd wake_fd_;
  door::Door door_;
  // Owned by the I/O thread.
  std::vector<std::byte> io_buffer_;
  ClientId next_id_ = kFirstClientId;

  std::mutex mutex_;  // guards connections_
  std::unordered_map<ClientId, std::shared_ptr<Conn>> connections_;
};

}  // namespace

std::unique_ptr<ServerEndpoint> make_server(const ListenOptions& options) {
  return std::make_unique<Server>(options);
}

}  // namespace chat::transport::fifo

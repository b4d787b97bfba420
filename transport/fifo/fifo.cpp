#include "transport/fifo/fifo.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <system_error>
#include <unordered_map>

#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "common/log.hpp"
#include "transport/fifo/named_fifo.hpp"
#include "transport/fifo/wire.hpp"
#include "transport/names.hpp"
#include "transport/pid_watch.hpp"
#include "transport/warn_limiter.hpp"

namespace chat::transport::fifo {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Gone = ServerEvent::Gone;

// Per pipe, per direction. The kernel default is 16 pages; asking explicitly keeps the bound on
// machines with larger pages too. Either way far below kMaxTransportBufferBytes.
constexpr int kPipeBytes = 64 << 10;
constexpr auto kHandshakeTimeout = 5s;  // a hello whose client never gets ready is dropped
// Handshakes in progress at once. Further hellos wait in hello.fifo (it holds 2048) until one
// ends: a burst of clients is served in turn, not dropped.
constexpr std::size_t kMaxPendingHellos = 64;
constexpr std::size_t kReadChunk = 64 << 10;  // bytes read per pipe per poll(), for fairness
constexpr std::uint64_t kHelloKey = 0;
constexpr std::uint64_t kWakeKey = 1;
constexpr ClientId kFirstClientId = 1;  // epoll keys of clients are then >= 4

enum Slot : std::uint64_t { kUpSlot = 0, kDownSlot = 1, kPidSlot = 2 };
std::uint64_t key_of(ClientId id, Slot slot) {
  return (id << 2) | slot;
}

// Header and payload of one frame, laid out for a single write().
struct WireFrame {
  std::array<std::byte, wire::kMaxWireFrameBytes> bytes;
  std::size_t size = 0;

  WireFrame(wire::Kind kind, std::span<const std::byte> payload) {
    const auto header = wire::encode_header(kind, payload.size());
    std::memcpy(bytes.data(), header.data(), header.size());
    if (!payload.empty()) std::memcpy(bytes.data() + header.size(), payload.data(), payload.size());
    size = header.size() + payload.size();
  }
};

// Reassembles frames from the bytes of one pipe, whatever the boundaries of the reads.
class FrameReader {
 public:
  enum class Result { kFrame, kNeedMore, kMalformed };

  void append(const std::byte* p, std::size_t n) {
    if (begin_ == buf_.size()) {
      buf_.clear();
      begin_ = 0;
    } else if (begin_ >= kCompactAt) {
      buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(begin_));
      begin_ = 0;
    }
    buf_.insert(buf_.end(), p, p + n);
  }

  // Takes the next whole frame off the front. kMalformed (with `error`) if the bytes there are
  // not a frame header; the stream cannot be trusted after that.
  Result next(wire::Header& header, Frame& payload, std::string& error) {
    const std::size_t available = buf_.size() - begin_;
    if (available < wire::kHeaderBytes) return Result::kNeedMore;
    const auto h = wire::decode_header(buf_.data() + begin_, error);
    if (!h) return Result::kMalformed;
    if (available < wire::kHeaderBytes + h->length) return Result::kNeedMore;
    header = *h;
    const std::byte* start = buf_.data() + begin_ + wire::kHeaderBytes;
    payload.assign(start, start + h->length);
    begin_ += wire::kHeaderBytes + h->length;
    return Result::kFrame;
  }

 private:
  static constexpr std::size_t kCompactAt = 64 << 10;
  std::vector<std::byte> buf_;
  std::size_t begin_ = 0;
};

class Server final : public ServerEndpoint {
 public:
  explicit Server(const ListenOptions& o)
      : warn_(o.logger, "fifo"),
        dir_(o.dir),
        max_connections_(std::max<std::size_t>(o.max_clients * 2, o.max_clients + 64)),
        epoll_(::epoll_create1(EPOLL_CLOEXEC)),
        wake_fd_(make_eventfd("fifo server")),
        io_buffer_(kReadChunk) {
    if (!epoll_) throw_system_error("epoll_create1", "fifo server");
    const fs::path path = dir_ / wire::kHelloFifo;
    hello_node_ = OwnedFifo::create(path);
    int err = 0;
    std::string why;
    hello_fd_ = open_fifo(path, O_RDONLY, err, why);
    if (!hello_fd_) throw_system_error(why, "", err);
    // Our own writer keeps the FIFO from reporting end-of-file (a POLLHUP that never clears)
    // each time the last client has closed it.
    hello_keepalive_ = open_fifo(path, O_WRONLY, err, why);
    if (!hello_keepalive_) throw_system_error(why, "", err);
    add(hello_fd_.get(), kHelloKey, EPOLLIN);
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
    for (auto& [id, c] : pending_) {
      std::lock_guard lock(c->mutex);
      release(*c);
    }
  }

  void poll(std::vector<ServerEvent>& events, Deadline deadline) override {
    Deadline until = deadline;
    for (const auto& [id, c] : pending_) until = std::min(until, c->handshake_deadline);
    epoll_event ready[64];
    const int n =
        retry_eintr([&] { return ::epoll_wait(epoll_.get(), ready, 64, poll_timeout_ms(until)); });
    if (n < 0) throw_system_error("epoll_wait", "fifo server");
    for (int i = 0; i < n; ++i) {
      const std::uint64_t key = ready[i].data.u64;
      if (key == kHelloKey) {
        read_hellos();
      } else if (key == kWakeKey) {
        drain_eventfd(wake_fd_.get());
      } else {
        dispatch(key >> 2, static_cast<Slot>(key & 3), events);
      }
    }
    expire_handshakes();
    if (hellos_paused_ && pending_.size() < kMaxPendingHellos) {
      // Handshakes ended: answer the hellos that waited, and read hello.fifo again.
      hellos_paused_ = false;
      watch_hellos(EPOLLIN);
      answer_hellos();
    }
  }

  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    check_frame_size(frame.size());
    const std::shared_ptr<Conn> c = find(id);
    if (!c) return SendResult::kGone;
    std::lock_guard lock(c->mutex);
    if (c->closed || !c->down) return SendResult::kGone;
    if (!c->tail.empty()) {  // the previous frame is not all in the pipe yet
      c->want_writable = true;
      watch_writable(*c);
      return SendResult::kFull;
    }
    const WireFrame w(wire::Kind::kData, frame);
    const ssize_t n = retry_eintr([&] { return ::write(c->down.get(), w.bytes.data(), w.size); });
    if (n == static_cast<ssize_t>(w.size)) return SendResult::kSent;
    if (n >= 0) {
      // Only a frame longer than PIPE_BUF (header included) is split, and only by a pipe that
      // is nearly full: keep the rest, finish it on POLLOUT. The frame counts as queued.
      c->tail.assign(w.bytes.begin() + n, w.bytes.begin() + static_cast<std::ptrdiff_t>(w.size));
      watch_writable(*c);
      return SendResult::kSent;
    }
    if (errno == EAGAIN) {
      c->want_writable = true;
      watch_writable(*c);
      return SendResult::kFull;
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
    if (!c->tail.empty() && c->down) {
      // One last try to finish a half-written frame, so the client does not see it truncated.
      [[maybe_unused]] ssize_t n = ::write(c->down.get(), c->tail.data(), c->tail.size());
    }
    // Closing our writing end is what the client sees as end-of-file, after the frames
    // already in the pipe.
    release(*c);
  }

  std::size_t buffered(ClientId id) override {
    const std::shared_ptr<Conn> c = find(id);
    if (!c) return 0;
    std::lock_guard lock(c->mutex);
    if (c->closed || !c->down) return 0;
    int bytes = 0;  // FIONREAD counts what is in the pipe from either end
    if (::ioctl(c->down.get(), FIONREAD, &bytes) != 0) bytes = 0;
    return static_cast<std::size_t>(bytes) + c->tail.size();
  }

  void wake() override { signal_eventfd(wake_fd_.get()); }

  nlohmann::json objects() const override { return {{"hello_fifo", hello_node_.path().string()}}; }

 private:
  // One client, from its hello until close(). Pending (before kReady) it is known to the I/O
  // thread only; connected, to send() and close() too.
  struct Conn {
    ClientId id = 0;
    pid_t pid = 0;
    Deadline handshake_deadline{};
    // Owned by the I/O thread.
    FrameReader reader;
    bool connected = false;
    bool gone_reported = false;
    bool bye = false;

    std::mutex mutex;  // guards everything below: the descriptors are closed under it
    UniqueFd up;       // reading end of .up
    UniqueFd down;     // writing end of .down
    UniqueFd pidfd;
    UniqueFd keeper;  // pending: a reader of .down of our own, so that `down` could be opened
    OwnedFifo up_node, down_node;  // pending: the names; unlinked once connected
    std::vector<std::byte> tail;   // the unwritten rest of a frame partly written to `down`
    bool want_writable = false;    // a send() said kFull: report kWritable
    bool out_watched = false;      // `down` is in the epoll set for EPOLLOUT
    bool closed = false;
  };

  enum class ReadResult { kMore, kDrained, kEnd };

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

  // With c.mutex held: closes every descriptor and unlinks the names.
  void release(Conn& c) {
    c.closed = true;
    forget_fd(c.up.get());
    forget_fd(c.pidfd.get());
    if (c.out_watched) forget_fd(c.down.get());
    c.out_watched = false;
    c.up.reset();
    c.down.reset();
    c.pidfd.reset();
    c.keeper.reset();
    c.up_node.reset();
    c.down_node.reset();
    c.tail.clear();
  }

  std::shared_ptr<Conn> find(ClientId id) {
    std::lock_guard lock(mutex_);
    const auto it = connections_.find(id);
    return it == connections_.end() ? nullptr : it->second;
  }

  void dispatch(ClientId id, Slot slot, std::vector<ServerEvent>& events) {
    if (const auto it = pending_.find(id); it != pending_.end()) {
      const std::shared_ptr<Conn> c = it->second;
      if (slot == kUpSlot) {
        serve_up(c, events);
      } else if (slot == kPidSlot) {
        abort_handshake(*c, "");  // the client died before it got ready
      }
      return;
    }
    const std::shared_ptr<Conn> c = find(id);
    if (!c || c->gone_reported) return;
    if (slot == kUpSlot) {
      serve_up(c, events);
    } else if (slot == kDownSlot) {
      serve_down(*c, events);
    } else {
      // Everything a dead process wrote is in the pipe already: deliver it, then report.
      while (!c->gone_reported && serve_up(c, events) == ReadResult::kMore) {
      }
      report_gone(*c, Gone::kDied, "", events);
    }
  }

  // Reads what the client wrote and turns it into events.
  ReadResult serve_up(const std::shared_ptr<Conn>& c, std::vector<ServerEvent>& events) {
    ReadResult result = ReadResult::kDrained;
    std::size_t total = 0;
    {
      std::lock_guard lock(c->mutex);
      if (c->closed) return ReadResult::kEnd;
      while (total < kReadChunk) {
        const ssize_t n =
            retry_eintr([&] { return ::read(c->up.get(), io_buffer_.data(), kReadChunk - total); });
        if (n > 0) {
          c->reader.append(io_buffer_.data(), static_cast<std::size_t>(n));
          total += static_cast<std::size_t>(n);
          if (total == kReadChunk) result = ReadResult::kMore;
          continue;
        }
        if (n == 0 || errno != EAGAIN) result = ReadResult::kEnd;
        break;
      }
    }
    wire::Header header;
    std::string error;
    for (;;) {
      ServerEvent ev;
      const auto r = c->reader.next(header, ev.frame, error);
      if (r == FrameReader::Result::kNeedMore) break;
      if (r == FrameReader::Result::kMalformed) {
        if (!c->connected) {
          abort_handshake(*c, error);
        } else {
          report_gone(*c, Gone::kMalformed, error, events);
        }
        return ReadResult::kEnd;
      }
      if (!c->connected) {
        if (header.kind != wire::Kind::kReady) {
          abort_handshake(*c, "the first frame was not kReady");
          return ReadResult::kEnd;
        }
        connect_pending(c, events);
        continue;
      }
      if (header.kind == wire::Kind::kData) {
        ev.kind = ServerEvent::Kind::kFrame;
        ev.client = c->id;
        events.push_back(std::move(ev));
      } else if (header.kind == wire::Kind::kBye) {
        c->bye = true;
        report_gone(*c, Gone::kClosed, "", events);
        return ReadResult::kEnd;
      } else {
        report_gone(*c, Gone::kMalformed, "a second kReady frame", events);
        return ReadResult::kEnd;
      }
    }
    if (result == ReadResult::kEnd) {
      if (!c->connected) {
        abort_handshake(*c, "");
      } else {
        report_gone(*c, Gone::kClosed, "", events);
      }
    }
    return result;
  }

  // Finishes a half-written frame; reports kWritable once the pipe takes frames again.
  void serve_down(Conn& c, std::vector<ServerEvent>& events) {
    std::lock_guard lock(c.mutex);
    if (c.closed) return;
    while (!c.tail.empty()) {
      const ssize_t n =
          retry_eintr([&] { return ::write(c.down.get(), c.tail.data(), c.tail.size()); });
      if (n > 0) {
        c.tail.erase(c.tail.begin(), c.tail.begin() + n);
        continue;
      }
      if (n < 0 && errno == EAGAIN) return;  // still full: keep watching
      c.tail.clear();  // EPIPE: the reader is gone; the next send() says kGone
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

  // Reports the end of a connected client once; it stays in connections_ until close().
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

  void read_hellos() {
    std::size_t total = 0;
    while (total < kReadChunk) {
      const ssize_t n = retry_eintr(
          [&] { return ::read(hello_fd_.get(), io_buffer_.data(), kReadChunk - total); });
      if (n <= 0) break;  // EAGAIN; never end-of-file, we hold a writer
      hello_bytes_.insert(hello_bytes_.end(), io_buffer_.begin(), io_buffer_.begin() + n);
      total += static_cast<std::size_t>(n);
    }
    answer_hellos();
  }

  void watch_hellos(std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = kHelloKey;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, hello_fd_.get(), &ev);
  }

  // Answers the whole hello records read so far, skipping garbage. With kMaxPendingHellos
  // handshakes in progress it stops, and stops reading hello.fifo (a level-triggered readable
  // FIFO would wake us for nothing) until one ends.
  void answer_hellos() {
    constexpr std::size_t kRecord = sizeof(wire::HelloRecord);
    std::size_t pos = 0;
    std::size_t skipped = 0;
    while (hello_bytes_.size() - pos >= kRecord) {
      if (pending_.size() >= kMaxPendingHellos) {
        hellos_paused_ = true;
        watch_hellos(0);
        break;
      }
      wire::HelloRecord r;
      std::memcpy(&r, hello_bytes_.data() + pos, kRecord);
      if (wire::valid_hello(r)) {
        answer_hello(r);
        pos += kRecord;
        continue;
      }
      // Not a record: resynchronise where the magic number next appears.
      std::size_t next = pos + 1;
      const std::size_t last = hello_bytes_.size() - sizeof wire::kMagic;
      for (; next <= last; ++next) {
        std::uint32_t magic;
        std::memcpy(&magic, hello_bytes_.data() + next, sizeof magic);
        if (magic == wire::kMagic) break;
      }
      next = std::min(next, last + 1);  // no magic: keep the last bytes, they may begin one
      skipped += next - pos;
      pos = next;
    }
    hello_bytes_.erase(hello_bytes_.begin(),
                       hello_bytes_.begin() + static_cast<std::ptrdiff_t>(pos));
    if (skipped > 0) {
      warn_("discarded " + std::to_string(skipped) + " bytes of garbage from " +
            hello_node_.path().string());
    }
  }

  // Creates the pair of FIFOs a hello asks for. A hello is never trusted: anything wrong with
  // it is logged and the hello dropped; nothing else is affected.
  void answer_hello(const wire::HelloRecord& r) {
    const pid_t pid = r.pid;
    const std::string who = "hello from pid " + std::to_string(pid);
    if (pid <= 0) return warn_(who + ": not a process id; dropped");
    {
      std::lock_guard lock(mutex_);
      if (connections_.size() + pending_.size() >= max_connections_) {
        return warn_(who + ": too many connections; dropped");
      }
    }
    struct stat st {};
    const std::string proc = "/proc/" + std::to_string(pid);
    if (::stat(proc.c_str(), &st) != 0) return warn_(who + ", which does not exist; dropped");
    if (st.st_uid != ::geteuid()) return warn_(who + ", a process of another user; dropped");
    try {
      UniqueFd pidfd = open_pidfd(pid);
      if (!pidfd) return warn_(who + ", which does not exist; dropped");
      auto c = std::make_shared<Conn>();
      c->id = next_id_++;
      c->pid = pid;
      const fs::path up = dir_ / wire::up_name(pid, r.nonce);
      const fs::path down = dir_ / wire::down_name(pid, r.nonce);
      int err = 0;
      std::string why;
      // Made under temporary names, renamed into place when finished.
      c->up_node = OwnedFifo::create(dir_ / ("." + up.filename().string() + ".tmp"));
      c->up = open_fifo(c->up_node.path(), O_RDONLY, err, why);
      if (!c->up) throw_system_error(why, "", err);
      limit_pipe(c->up.get(), kPipeBytes);
      c->down_node = OwnedFifo::create(dir_ / ("." + down.filename().string() + ".tmp"));
      c->keeper = open_fifo(c->down_node.path(), O_RDONLY, err, why);
      if (!c->keeper) throw_system_error(why, "", err);
      c->down = open_fifo(c->down_node.path(), O_WRONLY, err, why);
      if (!c->down) throw_system_error(why, "", err);
      limit_pipe(c->down.get(), kPipeBytes);
      c->up_node.rename_to(up);
      c->down_node.rename_to(down);  // last: the client waits for this name
      c->pidfd = std::move(pidfd);
      c->handshake_deadline = deadline_after(kHandshakeTimeout);
      add(c->up.get(), key_of(c->id, kUpSlot), EPOLLIN);
      add(c->pidfd.get(), key_of(c->id, kPidSlot), EPOLLIN);
      pending_.emplace(c->id, std::move(c));
    } catch (const std::exception& e) {
      warn_(who + ": cannot answer it: " + e.what());
    }
  }

  void connect_pending(const std::shared_ptr<Conn>& c, std::vector<ServerEvent>& events) {
    {
      std::lock_guard lock(c->mutex);
      // The client has opened its reading end of .down (it does before writing kReady): from
      // now on a vanished reader shows as EPIPE. The names have served their purpose.
      c->keeper.reset();
      c->up_node.reset();
      c->down_node.reset();
      c->connected = true;
    }
    pending_.erase(c->id);
    {
      std::lock_guard lock(mutex_);
      connections_.emplace(c->id, c);
    }
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kConnected;
    ev.client = c->id;
    ev.pid = c->pid;
    events.push_back(std::move(ev));
  }

  void abort_handshake(Conn& c, const std::string& why) {
    if (!why.empty()) {
      warn_("handshake with pid " + std::to_string(c.pid) + " failed: " + why);
    }
    {
      std::lock_guard lock(c.mutex);
      release(c);
    }
    pending_.erase(c.id);  // may destroy `c`: last
  }

  void expire_handshakes() {
    const auto now = Clock::now();
    std::vector<std::shared_ptr<Conn>> expired;
    for (const auto& [id, c] : pending_) {
      if (c->handshake_deadline <= now) expired.push_back(c);
    }
    for (const auto& c : expired) {
      abort_handshake(*c, "it never got ready (" + std::to_string(kHandshakeTimeout.count()) +
                              " s); its FIFOs are removed");
    }
  }

  WarnLimiter warn_;
  fs::path dir_;
  std::size_t max_connections_;
  UniqueFd epoll_;
  UniqueFd wake_fd_;
  OwnedFifo hello_node_;
  UniqueFd hello_fd_;
  UniqueFd hello_keepalive_;
  // Owned by the I/O thread.
  std::vector<std::byte> io_buffer_;
  std::vector<std::byte> hello_bytes_;
  bool hellos_paused_ = false;  // kMaxPendingHellos reached: hello.fifo is not watched
  std::unordered_map<ClientId, std::shared_ptr<Conn>> pending_;
  ClientId next_id_ = kFirstClientId;

  std::mutex mutex_;  // guards connections_
  std::unordered_map<ClientId, std::shared_ptr<Conn>> connections_;
};

class Client final : public ClientConnection {
 public:
  explicit Client(const ConnectOptions& o)
      : wake_fd_(make_eventfd("fifo client")),
        server_pidfd_(open_pidfd(o.server_pid)),
        io_buffer_(kReadChunk) {
    if (!server_pidfd_) {
      throw ConnectError(
          ConnectError::Kind::kNoServer,
          "the server process (pid " + std::to_string(o.server_pid) + ") has exited");
    }
    const fs::path hello_path = o.dir / wire::kHelloFifo;
    int err = 0;
    std::string why;
    UniqueFd hello = open_fifo(hello_path, O_WRONLY, err, why);
    if (!hello) {
      throw ConnectError(err == ENOENT || err == ENXIO ? ConnectError::Kind::kNoServer
                                                       : ConnectError::Kind::kOther,
                         why);
    }
    // Watch before saying hello, so the rename that answers it cannot be missed. Without
    // inotify (the per-user limit of instances is small: 128 here) look again after growing
    // pauses instead.
    UniqueFd names(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (names && ::inotify_add_watch(names.get(), o.dir.c_str(), IN_MOVED_TO) < 0) names.reset();
    const pid_t pid = ::getpid();
    const std::uint64_t nonce = random_nonce("nonce");
    const wire::HelloRecord record = wire::make_hello(pid, nonce);
    if (!write_whole(hello.get(), &record, sizeof record, o.deadline)) {
      throw ConnectError(
          errno == ETIMEDOUT ? ConnectError::Kind::kTimeout : ConnectError::Kind::kNoServer,
          "cannot write a hello to " + hello_path.string() + ": " + std::strerror(errno));
    }
    const fs::path down_path = o.dir / wire::down_name(pid, nonce);
    int pause_ms = 1;
    for (;;) {
      down_ = open_fifo(down_path, O_RDONLY, err, why);
      if (down_) break;
      if (err != ENOENT) throw ConnectError(ConnectError::Kind::kOther, why);
      pollfd p[2] = {{server_pidfd_.get(), POLLIN, 0}, {names.get(), POLLIN, 0}};
      int timeout = poll_timeout_ms(o.deadline);
      if (!names) {
        timeout = timeout < 0 ? pause_ms : std::min(timeout, pause_ms);
        pause_ms = std::min(pause_ms * 2, 10);
      }
      const int r = retry_eintr([&] { return ::poll(p, names ? 2 : 1, timeout); });
      if (r == 0 && Clock::now() >= o.deadline) {
        throw ConnectError(ConnectError::Kind::kTimeout,
                           "the server did not answer the hello on " + hello_path.string());
      }
      if (p[0].revents != 0) {
        throw ConnectError(ConnectError::Kind::kNoServer, "the server exited during the handshake");
      }
      char events[4096];
      while (names && ::read(names.get(), events, sizeof events) > 0) {
      }
    }
    up_ = open_fifo(o.dir / wire::up_name(pid, nonce), O_WRONLY, err, why);
    if (!up_) throw ConnectError(ConnectError::Kind::kOther, why);
    const WireFrame ready(wire::Kind::kReady, {});
    if (!write_whole(up_.get(), ready.bytes.data(), ready.size, o.deadline)) {
      throw ConnectError(ConnectError::Kind::kOther,
                         "cannot finish the handshake: " + std::string(std::strerror(errno)));
    }
  }

  ~Client() override {
    std::lock_guard lock(send_mutex_);
    // Say goodbye (so the server does not take the hang-up for a death), unless a frame is still
    // half written and the pipe will not take the rest now.
    if (!tail_.empty()) {
      const ssize_t n = ::write(up_.get(), tail_.data(), tail_.size());
      if (n != static_cast<ssize_t>(tail_.size())) return;
    }
    const WireFrame bye(wire::Kind::kBye, {});
    [[maybe_unused]] ssize_t n = ::write(up_.get(), bye.bytes.data(), bye.size);
  }

  SendResult send(std::span<const std::byte> frame, Deadline deadline) override {
    check_frame_size(frame.size());
    std::lock_guard lock(send_mutex_);
    if (!tail_.empty()) {
      const SendResult r = finish_tail(deadline);
      if (r != SendResult::kSent) return r;
    }
    const WireFrame w(wire::Kind::kData, frame);
    std::size_t done = 0;
    for (;;) {
      const ssize_t n =
          retry_eintr([&] { return ::write(up_.get(), w.bytes.data() + done, w.size - done); });
      if (n > 0) {
        done += static_cast<std::size_t>(n);
        if (done == w.size) return SendResult::kSent;
        continue;
      }
      if (n < 0 && errno != EAGAIN) return SendResult::kGone;  // EPIPE: the server is gone
      const SendResult r = wait_writable(deadline);
      if (r == SendResult::kGone) return r;
      if (r == SendResult::kFull) {
        if (done == 0) return SendResult::kFull;
        // Part of the frame is in the pipe: it is queued; the next send() finishes it.
        tail_.assign(w.bytes.begin() + static_cast<std::ptrdiff_t>(done),
                     w.bytes.begin() + static_cast<std::ptrdiff_t>(w.size));
        return SendResult::kSent;
      }
    }
  }

  ReceiveResult receive(Frame& frame, Deadline deadline) override {
    std::lock_guard lock(receive_mutex_);
    for (;;) {
      if (!ended_) {
        wire::Header header;
        std::string error;
        const auto r = reader_.next(header, frame, error);
        if (r == FrameReader::Result::kFrame && header.kind == wire::Kind::kData) {
          return ReceiveResult::kFrame;
        }
        if (r != FrameReader::Result::kNeedMore) ended_ = true;  // the server broke the rules
      }
      if (ended_) return ReceiveResult::kClosed;
      const ssize_t n =
          retry_eintr([&] { return ::read(down_.get(), io_buffer_.data(), io_buffer_.size()); });
      if (n > 0) {
        reader_.append(io_buffer_.data(), static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0 || errno != EAGAIN) {
        // End-of-file: the server closed the connection, or died (server_alive() tells).
        ended_ = true;
        continue;
      }
      pollfd p[3] = {
          {down_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}, {server_pidfd_.get(), POLLIN, 0}};
      const int r = retry_eintr([&] { return ::poll(p, 3, poll_timeout_ms(deadline)); });
      if (r == 0) return ReceiveResult::kTimeout;
      if (p[1].revents != 0) {
        drain_eventfd(wake_fd_.get());
        return ReceiveResult::kTimeout;
      }
      if (p[2].revents != 0 && p[0].revents == 0) {
        // A dead server's descriptors are closed before its pidfd turns ready, so its pipe
        // would show end-of-file already; this is only a safety net.
        server_dead_ = true;
        ended_ = true;
      }
    }
  }

  bool server_alive() override {
    // Once the connection has ended, give the pidfd kDeathSettle to tell a death from a close.
    // Only asked when the connection is lost, so a normal goodbye costs no wait.
    if (!server_dead_ && pidfd_exited(server_pidfd_.get(), ended_ ? kDeathSettle : 0ms)) {
      server_dead_ = true;
    }
    return !server_dead_;
  }

  void wake() override { signal_eventfd(wake_fd_.get()); }

 private:
  // Waits until the up pipe takes bytes again: kSent, or kFull at the deadline, or kGone when
  // the server died.
  SendResult wait_writable(Deadline deadline) {
    pollfd p[2] = {{up_.get(), POLLOUT, 0}, {server_pidfd_.get(), POLLIN, 0}};
    const int r = retry_eintr([&] { return ::poll(p, 2, poll_timeout_ms(deadline)); });
    if (r == 0) return SendResult::kFull;
    if (p[1].revents != 0) return SendResult::kGone;
    return SendResult::kSent;
  }

  // With send_mutex_ held: writes the rest of a half-sent frame.
  SendResult finish_tail(Deadline deadline) {
    while (!tail_.empty()) {
      const ssize_t n = retry_eintr([&] { return ::write(up_.get(), tail_.data(), tail_.size()); });
      if (n > 0) {
        tail_.erase(tail_.begin(), tail_.begin() + n);
        continue;
      }
      if (n < 0 && errno != EAGAIN) return SendResult::kGone;
      const SendResult r = wait_writable(deadline);
      if (r != SendResult::kSent) return r;
    }
    return SendResult::kSent;
  }

  // Writes `size` bytes (at most PIPE_BUF: all or nothing) to a non-blocking FIFO, waiting for
  // room until `deadline`. False with errno set (ETIMEDOUT at the deadline).
  bool write_whole(int fd, const void* data, std::size_t size, Deadline deadline) {
    for (;;) {
      const ssize_t n = retry_eintr([&] { return ::write(fd, data, size); });
      if (n == static_cast<ssize_t>(size)) return true;
      if (n >= 0) {
        errno = EIO;  // cannot happen for size <= PIPE_BUF
        return false;
      }
      if (errno != EAGAIN) return false;
      pollfd p[2] = {{fd, POLLOUT, 0}, {server_pidfd_.get(), POLLIN, 0}};
      const int r = retry_eintr([&] { return ::poll(p, 2, poll_timeout_ms(deadline)); });
      if (r == 0) {
        errno = ETIMEDOUT;
        return false;
      }
      if (p[1].revents != 0) {
        errno = ESRCH;
        return false;
      }
    }
  }

  UniqueFd wake_fd_;
  UniqueFd server_pidfd_;
  UniqueFd down_;  // reading end of our .down
  UniqueFd up_;    // writing end of our .up
  std::atomic<bool> server_dead_{false};

  std::mutex send_mutex_;  // guards tail_
  std::vector<std::byte> tail_;

  std::mutex receive_mutex_;  // guards the receiving state
  std::vector<std::byte> io_buffer_;
  FrameReader reader_;
  std::atomic<bool> ended_{false};
};

}  // namespace

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return std::make_unique<Server>(options);
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  return std::make_unique<Client>(options);
}

std::vector<std::string> cleanup(const CleanupOptions& options) {
  (void)options;
  return {};
}

}  // namespace chat::transport::fifo

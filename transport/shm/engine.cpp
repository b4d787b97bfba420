#include "transport/shm/engine.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "common/error.hpp"
#include "common/log.hpp"
#include "transport/door.hpp"
#include "transport/pid_watch.hpp"
#include "transport/shm/layout.hpp"
#include "transport/shm/sigbus_guard.hpp"

namespace chat::transport::shm {
namespace {

constexpr std::size_t kFramesPerSlotPerPoll = 64;  // fairness between busy clients
// The longest the I/O thread sleeps without looking: a bounded re-check, so even a lost
// wake-up delays by no more than this.
constexpr auto kMaxSleep = std::chrono::milliseconds(500);
// A client whose wake-up lock is held at every wake-up for this long is dropped: a live client
// holds it for a few instructions at a time.
constexpr auto kStuckAfter = std::chrono::seconds(1);

std::function<void()> g_full_hook;
std::atomic<bool> g_full_hook_set{false};

// ClientId: the slot's generation above kIndexBits bits of slot index.
constexpr int kIndexBits = 20;
constexpr ClientId kIndexMask = (ClientId{1} << kIndexBits) - 1;

ClientId make_id(std::size_t index, std::uint32_t generation) {
  return (static_cast<ClientId>(generation) << kIndexBits) | index;
}

struct SplitId {
  std::size_t index;
  std::uint32_t generation;
};

SplitId split_id(ClientId id) {
  return {static_cast<std::size_t>(id & kIndexMask), static_cast<std::uint32_t>(id >> kIndexBits)};
}

// What an epoll event is about: the low bits of its tag; the slot index above them.
enum Source : std::uint64_t { kDoor, kWakeFd, kBell, kPidfd, kSocket };
constexpr int kSourceBits = 3;

std::uint64_t tag(Source source, std::size_t index = 0) {
  return (static_cast<std::uint64_t>(index) << kSourceBits) | source;
}

// Reads an eventfd down to zero (it is non-blocking).
void drain_eventfd(int fd) {
  std::uint64_t count;
  [[maybe_unused]] const ssize_t n = ::read(fd, &count, sizeof count);
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

enum class SlotState : int { kFree, kActive, kClosing };

// Server-private record of one connection. Written by the I/O thread while the slot is not
// kActive; read by senders once they have seen kActive (acquire).
struct Slot {
  std::atomic<SlotState> state{SlotState::kFree};
  std::atomic<std::uint32_t> generation{0};
  std::atomic<bool> want_writable{false};
  std::atomic<bool> corrupt_down{false};
  std::atomic<bool> stuck{false};           // its wake-up lock stays held, or is broken
  std::atomic<std::int64_t> busy_since{0};  // first of consecutive kBusy wake-ups (ns), or 0
  std::unique_ptr<Segment> segment;
  std::unique_ptr<SigbusGuard> guard;
  ClientBlock* block = nullptr;
  UniqueFd socket;  // the door connection: its hang-up means the client is gone
  UniqueFd pidfd;
  UniqueFd bell;  // the client's bell eventfd
  // I/O thread only:
  bool died = false;
  bool hung_up = false;
  Deadline hung_up_at{};
  bool gone_reported = false;
  RingReader up;
  RingWriter down;
  pid_t pid = 0;
  uid_t uid = 0;
};

class Server final : public ServerEndpoint {
 public:
  Server(const ListenOptions& options, std::string transport, Flavor flavor)
      : transport_(std::move(transport)),
        instance_(options.instance),
        memory_(std::move(flavor.memory)),
        waker_(std::move(flavor.waker)),
        logger_(options.logger),
        slots_(options.max_clients),
        epoll_(::epoll_create1(EPOLL_CLOEXEC)),
        wake_fd_(make_bell_eventfd()),
        door_(options.dir, options.access, options.logger) {
    if (!epoll_) throw_system_error("epoll_create1", "shm server");
    add(door_.fd(), EPOLLIN, tag(kDoor));
    add(wake_fd_.get(), EPOLLIN, tag(kWakeFd));
  }

  ~Server() override {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].state.load() != SlotState::kFree) destroy(i);
    }
  }

  void poll(std::vector<ServerEvent>& events, Deadline deadline) override {
    wait_for_work(deadline);
    woken_.store(false, std::memory_order_relaxed);
    if (door_ready_) {
      door_ready_ = false;
      accept_guests(events);
    }
    recheck_at_ = kNoDeadline;
    for (std::size_t i = 0; i < used_slots_; ++i) collect(i, events);
  }

  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    check_frame_size(frame.size());
    Slot* s = usable_slot(id);
    if (s == nullptr) return SendResult::kGone;
    const SendResult r = put(*s, frame);
    if (r == SendResult::kSent) wake_client(*s, s->block->rx_wake);
    return r;
  }

  std::size_t send_batch(ClientId id, std::span<const std::span<const std::byte>> frames,
                         SendResult& stopped) override {
    for (const auto& frame : frames) check_frame_size(frame.size());
    stopped = SendResult::kGone;
    Slot* s = usable_slot(id);
    if (s == nullptr) return 0;
    std::size_t sent = 0;
    stopped = SendResult::kSent;
    for (const auto& frame : frames) {
      stopped = put(*s, frame);
      if (stopped != SendResult::kSent) break;
      ++sent;
    }
    // One doorbell for the whole batch: the client drains everything published before it.
    if (sent > 0) wake_client(*s, s->block->rx_wake);
    return sent;
  }

  void close(ClientId id) override {
    const auto [index, generation] = split_id(id);
    if (index >= slots_.size()) return;
    Slot& s = slots_[index];
    if (s.generation.load() != generation) return;
    SlotState expected = SlotState::kActive;
    if (s.state.compare_exchange_strong(expected, SlotState::kClosing)) wake();
  }

  std::size_t buffered(ClientId id) override {
    Slot* s = active_slot(id);
    return s == nullptr ? 0 : s->down.pending();
  }

  void wake() override {
    woken_.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  }

  nlohmann::json objects() const override { return memory_->objects(); }

 private:
  void add(int fd, std::uint32_t what, std::uint64_t t) {
    epoll_event ev{};
    ev.events = what;
    ev.data.u64 = t;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw_system_error("epoll_ctl(ADD)", "shm server");
    }
  }

  // Explicitly: the client holds a copy of its bell eventfd, and epoll forgets a descriptor
  // only once every copy of it is closed.
  void forget(const UniqueFd& fd) {
    if (fd) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd.get(), nullptr);
  }

  Slot* active_slot(ClientId id) {
    const auto [index, generation] = split_id(id);
    if (index >= slots_.size()) return nullptr;
    Slot& s = slots_[index];
    if (s.state.load(std::memory_order_acquire) != SlotState::kActive) return nullptr;
    if (s.generation.load(std::memory_order_relaxed) != generation) return nullptr;
    return &s;
  }

  // An active slot that may still be sent to: not known to be broken.
  Slot* usable_slot(ClientId id) {
    Slot* s = active_slot(id);
    if (s == nullptr || s->corrupt_down.load() || s->stuck.load() || s->guard->tripped()) {
      return nullptr;
    }
    return s;
  }

  ClientId id_of(std::size_t index) const {
    return make_id(index, slots_[index].generation.load());
  }

  // Writes one frame into the client's down ring without waking it (the caller does).
  SendResult put(Slot& s, std::span<const std::byte> frame) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      switch (s.down.write(frame)) {
        case RingStatus::kOk:
          return SendResult::kSent;
        case RingStatus::kFull:
          // want_writable first, the ring's "producer waiting" flag second: a client that
          // drains as soon as it sees the flag rings the bell, and the I/O thread's re-check
          // must then already find that we want to hear about room.
          s.want_writable.store(true, std::memory_order_seq_cst);
          if (s.down.wait_for_room(frame.size())) continue;
          if (g_full_hook_set.load(std::memory_order_acquire)) g_full_hook();
          return SendResult::kFull;
        default:
          s.corrupt_down.store(true);
          wake();
          return SendResult::kGone;
      }
    }
    return SendResult::kFull;
  }

  // Wakes a client's thread. The area is the client's to scribble on: a wake-up lock it keeps
  // held (or breaks) costs each wake-up the waker's patience and, within kStuckAfter, the
  // client its connection.
  void wake_client(Slot& s, WakeArea& area) {
    switch (notify(*waker_, area, s.pid)) {
      case WakeResult::kIdle:  // says nothing about the lock
        return;
      case WakeResult::kDone:
        if (s.busy_since.load(std::memory_order_relaxed) != 0) s.busy_since.store(0);
        return;
      case WakeResult::kBusy: {
        const std::int64_t now = now_ns();
        std::int64_t since = 0;
        if (s.busy_since.compare_exchange_strong(since, now)) return;
        if (now - since < std::chrono::nanoseconds(kStuckAfter).count()) return;
        break;
      }
      case WakeResult::kBroken:
        break;
    }
    if (!s.stuck.exchange(true)) wake();
  }

  void wait_for_work(Deadline deadline) {
    int timeout = 0;
    if (!has_work() && !spin_for_work()) {
      bell_.sleeping();
      if (!has_work()) {
        const Deadline until = std::min({deadline, deadline_after(kMaxSleep), recheck_at_});
        timeout = poll_timeout_ms(until);
      }
    }
    take_events(timeout);
    bell_.awake();
  }

  // Spins within the budget while spinning has been paying off (see SpinBudget).
  bool spin_for_work() {
    const std::int64_t spin_ns = spin_.next_spin_ns();
    if (spin_ns <= 0) return false;
    const auto end = Clock::now() + std::chrono::nanoseconds(spin_ns);
    for (unsigned i = 1;; ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if (has_work()) {
        spin_.spin_hit();
        return true;
      }
      if ((i & 15) == 0 && Clock::now() >= end) break;
    }
    spin_.spin_miss();
    return false;
  }

  // Sources epoll cannot see: the rings, and what other threads asked for.
  bool has_work() {
    if (woken_.load(std::memory_order_acquire)) return true;
    // Only up to the highest slot ever used: a spinning poll re-checks this many times.
    for (std::size_t i = 0; i < used_slots_; ++i) {
      Slot& s = slots_[i];
      const SlotState state = s.state.load(std::memory_order_acquire);
      if (state == SlotState::kClosing) return true;
      if (state != SlotState::kActive || s.gone_reported) continue;
      if (s.up.readable() || s.corrupt_down.load() || s.stuck.load() || s.guard->tripped() ||
          s.block->client_closed.load(std::memory_order_acquire)) {
        return true;
      }
      // Re-arms the client's "wake me when you read" flag at every check, not only once:
      // a read that frees too little consumes the flag, and the reads after it must still
      // wake us (or the writable event waits for the next sleep slice).
      if (s.want_writable.load(std::memory_order_seq_cst) && s.down.wait_for_room(kMaxFrameBytes)) {
        return true;
      }
    }
    return false;
  }

  void take_events(int timeout_ms) {
    epoll_event evs[64];
    const int n = retry_eintr([&] { return ::epoll_wait(epoll_.get(), evs, 64, timeout_ms); });
    if (n < 0) throw_system_error("epoll_wait", "shm server");
    for (int i = 0; i < n; ++i) {
      const std::uint64_t t = evs[i].data.u64;
      const auto source = static_cast<Source>(t & ((1u << kSourceBits) - 1));
      if (source == kDoor) {
        door_ready_ = true;
        continue;
      }
      if (source == kWakeFd) {
        drain_eventfd(wake_fd_.get());
        continue;
      }
      Slot& s = slots_[t >> kSourceBits];
      switch (source) {
        case kDoor:
        case kWakeFd:
          break;
        case kBell:
          drain_eventfd(s.bell.get());
          break;
        case kPidfd:  // stays readable: once is enough
          s.died = true;
          forget(s.pidfd);
          break;
        case kSocket:
          if (!s.hung_up) {
            s.hung_up = true;
            s.hung_up_at = Clock::now();
          }
          forget(s.socket);
          break;
      }
    }
  }

  void accept_guests(std::vector<ServerEvent>& events) {
    for (;;) {
      std::optional<door::Guest> guest;
      try {
        guest = door_.accept();
      } catch (const std::system_error& e) {
        if (logger_) logger_->warn(std::string("door: ") + e.what());
        return;
      }
      if (!guest) return;
      admit(std::move(*guest), events);
    }
  }

  void admit(door::Guest guest, std::vector<ServerEvent>& events) {
    const auto free_slot = std::find_if(slots_.begin(), slots_.end(), [](const Slot& s) {
      return s.state.load() == SlotState::kFree;
    });
    if (free_slot == slots_.end()) {
      const std::string n = std::to_string(slots_.size());
      door::refuse(guest.socket.get(), "server_full",
                   "the server is full: " + n + " of " + n + " clients connected");
      return;
    }
    const std::size_t index = static_cast<std::size_t>(free_slot - slots_.begin());
    Slot& s = *free_slot;
    // A new generation even if this fails: the next try gets a name of its own.
    s.generation.store(s.generation.load() + 1);
    door::Grant grant;
    try {
      open_channel(index, grant);
    } catch (const std::exception& e) {
      if (logger_) logger_->warn(std::string("refusing a client: ") + e.what());
      release(s);
      door::refuse(guest.socket.get(), "server_busy",
                   std::string("cannot create the client's channel: ") + e.what());
      return;
    }
    if (!door::grant(guest.socket.get(), grant)) {  // it left while we were busy
      release(s);
      return;
    }
    s.segment->granted();
    try {
      watch(index, std::move(guest));
    } catch (const std::system_error& e) {
      if (logger_) logger_->warn(std::string("dropping a new client: ") + e.what());
      release(s);
      return;
    }
    used_slots_ = std::max(used_slots_, index + 1);
    s.state.store(SlotState::kActive, std::memory_order_release);
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kConnected;
    ev.client = id_of(index);
    ev.pid = s.pid;
    ev.uid = s.uid;
    events.push_back(std::move(ev));
  }

  // Creates slot `index`'s segment and bell, and describes them in `grant`.
  void open_channel(std::size_t index, door::Grant& grant) {
    Slot& s = slots_[index];
    s.segment =
        memory_->create("c" + std::to_string(index) + "." + std::to_string(s.generation.load()),
                        sizeof(ClientBlock));
    s.guard = std::make_unique<SigbusGuard>(s.segment->data(), s.segment->size());
    s.block = reinterpret_cast<ClientBlock*>(s.segment->data());
    ClientBlock& b = *s.block;
    b.version = kLayoutVersion;
    b.up_bytes = kUpRingBytes;
    b.down_bytes = kDownRingBytes;
    waker_->init(b.rx_wake);
    waker_->init(b.tx_wake);
    init_ring(b.up);
    init_ring(b.down);
    std::atomic_thread_fence(std::memory_order_release);
    b.magic = kClientMagic;
    s.up = RingReader(&b.up, b.up_data, kUpRingBytes);
    s.down = RingWriter(&b.down, b.down_data, kDownRingBytes);
    s.bell = make_bell_eventfd();
    s.died = s.hung_up = s.gone_reported = false;
    s.want_writable.store(false);
    s.corrupt_down.store(false);
    s.stuck.store(false);
    s.busy_since.store(0);

    grant.transport = transport_;
    grant.instance = instance_;
    grant.channel = s.segment->channel();
    grant.channel[kChannelLayout] = kLayoutVersion;
    grant.channel[kChannelBytes] = sizeof(ClientBlock);
    if (s.segment->fd() >= 0) grant.fds.push_back(s.segment->fd());
    grant.fds.push_back(bell_.page_fd());
    grant.fds.push_back(s.bell.get());
  }

  // Keeps the admitted guest's connection and pidfd in slot `index`, and watches them.
  void watch(std::size_t index, door::Guest guest) {
    Slot& s = slots_[index];
    s.pid = guest.peer.pid;
    s.uid = guest.peer.uid;
    s.socket = std::move(guest.socket);
    s.pidfd = std::move(guest.pidfd);
    s.died = !s.pidfd;  // it exited at the door already
    add(s.bell.get(), EPOLLIN, tag(kBell, index));
    add(s.socket.get(), EPOLLRDHUP, tag(kSocket, index));  // never EPOLLIN: it may send junk
    if (s.pidfd) add(s.pidfd.get(), EPOLLIN, tag(kPidfd, index));
  }

  // Frees everything slot `s` holds (I/O thread, the slot not kActive).
  void release(Slot& s) {
    forget(s.bell);
    forget(s.socket);
    forget(s.pidfd);
    s.bell.reset();
    s.socket.reset();
    s.pidfd.reset();
    s.guard.reset();  // before the mapping it guards goes
    s.segment.reset();
    s.block = nullptr;
    s.state.store(SlotState::kFree, std::memory_order_release);
  }

  void collect(std::size_t index, std::vector<ServerEvent>& events) {
    Slot& s = slots_[index];
    switch (s.state.load(std::memory_order_acquire)) {
      case SlotState::kFree:
        return;
      case SlotState::kClosing:
        destroy(index);
        return;
      case SlotState::kActive:
        break;
    }
    if (s.gone_reported) return;
    if (s.guard->tripped()) {
      return report_gone(index, ServerEvent::Gone::kMalformed,
                         "it truncated its shared memory under the server (SIGBUS)", events);
    }
    const ClientId id = id_of(index);
    // Read `closed` before draining: frames published before the goodbye are all delivered.
    const bool closed = s.block->client_closed.load(std::memory_order_acquire) != 0;
    std::string why;
    bool drained = false;
    for (std::size_t n = 0; n < kFramesPerSlotPerPoll; ++n) {
      ServerEvent ev;
      const RingStatus r = s.up.read(ev.frame, why);
      if (r == RingStatus::kOk) {
        ev.kind = ServerEvent::Kind::kFrame;
        ev.client = id;
        events.push_back(std::move(ev));
        continue;
      }
      if (r == RingStatus::kCorrupt)
        return report_gone(index, ServerEvent::Gone::kMalformed, why, events);
      drained = true;
      break;
    }
    if (s.up.producer_needs_wake()) wake_client(s, s.block->tx_wake);
    if (s.corrupt_down.load()) {
      return report_gone(index, ServerEvent::Gone::kMalformed, "down ring head corrupted", events);
    }
    if (s.stuck.load()) {
      return report_gone(index, ServerEvent::Gone::kMalformed,
                         "its wake-up lock stays held or is broken", events);
    }
    if (drained && s.died) return report_gone(index, ServerEvent::Gone::kDied, "", events);
    if (drained && closed) return report_gone(index, ServerEvent::Gone::kClosed, "", events);
    if (drained && s.hung_up && hang_up_settled(s)) {
      return report_gone(
          index,
          pidfd_exited(s.pidfd.get()) ? ServerEvent::Gone::kDied : ServerEvent::Gone::kClosed, "",
          events);
    }
    if (s.want_writable.load(std::memory_order_acquire)) {
      if (s.down.has_room(kMaxFrameBytes)) {
        s.want_writable.store(false);
        ServerEvent ev;
        ev.kind = ServerEvent::Kind::kWritable;
        ev.client = id;
        events.push_back(std::move(ev));
      } else {
        s.down.wait_for_room(kMaxFrameBytes);  // re-arm: the client wakes us when it reads
      }
    }
  }

  // A connection that ended without a goodbye is a death if the pidfd says so within
  // kDeathSettle (a dying process closes its files a moment before); until then, look again.
  bool hang_up_settled(Slot& s) {
    const Deadline settled = s.hung_up_at + kDeathSettle;
    if (Clock::now() >= settled || !s.pidfd) return true;
    recheck_at_ = std::min(recheck_at_, settled);
    return false;
  }

  void report_gone(std::size_t index, ServerEvent::Gone gone, std::string detail,
                   std::vector<ServerEvent>& events) {
    slots_[index].gone_reported = true;
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kDisconnected;
    ev.client = id_of(index);
    ev.gone = gone;
    ev.detail = std::move(detail);
    events.push_back(std::move(ev));
  }

  void destroy(std::size_t index) {
    Slot& s = slots_[index];
    if (s.block != nullptr && !s.guard->tripped()) {
      s.block->server_closed.store(1, std::memory_order_release);
      notify(*waker_, s.block->rx_wake, s.pid);
      notify(*waker_, s.block->tx_wake, s.pid);
    }
    release(s);
  }

  const std::string transport_;
  const std::string instance_;
  std::unique_ptr<MemorySource> memory_;
  std::unique_ptr<Waker> waker_;
  const Logger* logger_;
  std::vector<Slot> slots_;
  std::size_t used_slots_ = 0;  // I/O thread: slots_[used_slots_..] have never been used
  UniqueFd epoll_;
  UniqueFd wake_fd_;
  ServerBell bell_;
  std::atomic<bool> woken_{false};
  bool door_ready_ = false;            // I/O thread
  Deadline recheck_at_ = kNoDeadline;  // I/O thread: a hang-up to look at again
  SpinBudget spin_;
  door::Door door_;  // last: no client is admitted before everything above exists
};

class Client final : public ClientConnection {
 public:
  Client(ConnectOptions& o, Flavor flavor)
      : flavor_(std::move(flavor)),
        waker_(*flavor_.waker),
        att_(Attachment::attach(o, flavor_)),
        block_(&att_.block()),
        up_(&block_->up, block_->up_data, kUpRingBytes),
        down_(&block_->down, block_->down_data, kDownRingBytes),
        door_(std::move(o.pass.socket)) {
    if (!o.pass.server_pidfd || pidfd_exited(o.pass.server_pidfd.get())) {
      throw ConnectError(ConnectError::Kind::kNoServer, "the server process has exited");
    }
    watcher_ = std::make_unique<PidWatcher>([this](std::uint64_t) {
      server_dead_.store(true);
      notify(waker_, block_->rx_wake, ::getpid());
      notify(waker_, block_->tx_wake, ::getpid());
    });
    watcher_->watch(0, std::move(o.pass.server_pidfd));
  }

  ~Client() override {
    watcher_.reset();
    block_->client_closed.store(1, std::memory_order_release);
    att_.ring_server_always();
  }

  SendResult send(std::span<const std::byte> frame, Deadline deadline) override {
    check_frame_size(frame.size());
    for (;;) {
      if (gone()) return SendResult::kGone;
      switch (up_.write(frame)) {
        case RingStatus::kOk:
          att_.ring_server();
          return SendResult::kSent;
        case RingStatus::kFull:
          break;
        default:
          return SendResult::kGone;
      }
      if (up_.wait_for_room(frame.size())) continue;
      waker_.attach_sleeper(block_->tx_wake);
      // wait_for_room re-arms the server's "wake the producer" flag at every check: a read
      // that freed too little must not leave us asleep until the next slice.
      const bool ok = wait_until(
          waker_, block_->tx_wake, tx_spin_,
          [&] { return gone() || up_.wait_for_room(frame.size()); }, deadline);
      if (!ok) return SendResult::kFull;
    }
  }

  ReceiveResult receive(Frame& frame, Deadline deadline) override {
    std::string why;
    for (;;) {
      const bool closed = gone();
      switch (down_.read(frame, why)) {
        case RingStatus::kOk:
          if (down_.producer_needs_wake()) att_.ring_server();
          return ReceiveResult::kFrame;
        case RingStatus::kCorrupt:
          corrupt_ = true;
          return ReceiveResult::kClosed;
        default:
          break;
      }
      if (closed) return ReceiveResult::kClosed;
      if (woken_.exchange(false)) return ReceiveResult::kTimeout;
      waker_.attach_sleeper(block_->rx_wake);
      const bool ok = wait_until(
          waker_, block_->rx_wake, rx_spin_,
          [&] { return down_.readable() || gone() || woken_.load(); }, deadline);
      if (!ok) return ReceiveResult::kTimeout;
    }
  }

  bool server_alive() override { return !server_dead_.load(); }

  void wake() override {
    woken_.store(true);
    notify(waker_, block_->rx_wake, ::getpid());
  }

 private:
  bool gone() const {
    return corrupt_ || server_dead_.load() ||
           block_->server_closed.load(std::memory_order_acquire) != 0;
  }

  Flavor flavor_;
  Waker& waker_;
  Attachment att_;
  ClientBlock* block_;
  RingWriter up_;
  RingReader down_;
  UniqueFd door_;  // kept open: its hang-up tells the server we are gone
  SpinBudget rx_spin_, tx_spin_;
  std::atomic<bool> server_dead_{false};
  std::atomic<bool> woken_{false};
  std::atomic<bool> corrupt_{false};
  std::unique_ptr<PidWatcher> watcher_;
};

// The bell's eventfd must be one: writing to anything else could block or reach a file.
void check_eventfd(int fd) {
  char target[64] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
  if (n < 0 || std::string_view(target, static_cast<std::size_t>(n)) != "anon_inode:[eventfd]") {
    throw std::runtime_error("the bell descriptor is not an eventfd");
  }
}

// The bell page is mapped and read: it must be a page that cannot shrink under us.
void check_bell_page(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_system_error("fstat", "server bell page");
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (!S_ISREG(st.st_mode) || st.st_size != 4096 || seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    throw std::runtime_error("the bell page is not a sealed page");
  }
}

void check_layout(const ClientBlock& b) {
  if (b.magic != kClientMagic || b.version != kLayoutVersion || b.up_bytes != kUpRingBytes ||
      b.down_bytes != kDownRingBytes) {
    throw std::runtime_error("the segment does not hold a client block of layout " +
                             std::to_string(kLayoutVersion));
  }
}

}  // namespace

Attachment Attachment::attach(ConnectOptions& o, Flavor& flavor) {
  door::Pass& pass = o.pass;
  Attachment a;
  try {
    const nlohmann::json& ch = pass.channel;
    if (!ch.is_object() || !ch.contains(kChannelLayout) || !ch.contains(kChannelBytes) ||
        ch.at(kChannelLayout).get<std::uint32_t>() != kLayoutVersion ||
        ch.at(kChannelBytes).get<std::size_t>() != sizeof(ClientBlock)) {
      throw std::runtime_error("the channel is not of layout " + std::to_string(kLayoutVersion) +
                               " with " + std::to_string(sizeof(ClientBlock)) + " bytes");
    }
    const std::size_t want = flavor.memory->passes_fd() ? 3 : 2;
    if (pass.fds.size() != want) {
      throw std::runtime_error("the grant carries " + std::to_string(pass.fds.size()) +
                               " descriptors, expected " + std::to_string(want));
    }
    std::size_t next = 0;
    UniqueFd segment_fd;
    if (want == 3) segment_fd = std::move(pass.fds[next++]);
    UniqueFd page = std::move(pass.fds[next++]);
    UniqueFd event = std::move(pass.fds[next++]);
    check_bell_page(page.get());
    check_eventfd(event.get());
    a.segment_ =
        flavor.memory->attach(ch, std::move(segment_fd), sizeof(ClientBlock), pass.server_uid);
    a.block_ = reinterpret_cast<ClientBlock*>(a.segment_->data());
    check_layout(*a.block_);
    a.bell_.emplace(std::move(page), std::move(event));
  } catch (const ConnectError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConnectError(ConnectError::Kind::kOther,
                       std::string("the server's channel is unusable: ") + e.what());
  }
  return a;
}

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options, std::string transport,
                                       Flavor flavor) {
  return std::make_unique<Server>(options, std::move(transport), std::move(flavor));
}

std::unique_ptr<ClientConnection> connect(ConnectOptions& options, Flavor flavor) {
  return std::make_unique<Client>(options, std::move(flavor));
}

void set_full_hook_for_tests(std::function<void()> hook) {
  g_full_hook_set.store(false);
  g_full_hook = std::move(hook);
  g_full_hook_set.store(static_cast<bool>(g_full_hook));
}

}  // namespace chat::transport::shm

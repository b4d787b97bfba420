#include "transport/shm/engine.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <random>
#include <vector>

#include "common/log.hpp"
#include "transport/pid_watch.hpp"
#include "transport/shm/layout.hpp"

namespace chat::transport::shm {
namespace {

constexpr auto kHandshakeTimeout = std::chrono::seconds(5);
constexpr std::size_t kSpareSlots = 8;             // room to tell clients past max_clients "full"
constexpr std::size_t kFramesPerSlotPerPoll = 64;  // fairness between busy clients

enum class SlotState : int { kFree, kHandshake, kActive, kClosing };

// Server-private record of one connection. Written by the I/O thread while the slot is not
// kActive; read by senders once they have seen kActive (acquire).
struct Slot {
  std::atomic<SlotState> state{SlotState::kFree};
  std::atomic<std::uint32_t> generation{0};
  std::atomic<bool> died{false};
  std::atomic<bool> want_writable{false};
  std::atomic<bool> corrupt_down{false};
  std::unique_ptr<Segment> segment;
  ClientBlock* block = nullptr;
  std::string name;
  bool name_removed = false;
  bool gone_reported = false;
  RingReader up;
  RingWriter down;
  pid_t pid = 0;
  Deadline handshake_deadline{};
};

ClientId make_id(std::size_t index, std::uint32_t generation) {
  return (static_cast<ClientId>(generation) << 20) | index;
}

class Server final : public ServerEndpoint {
 public:
  Server(const ListenOptions& options, Flavor flavor)
      : memory_(std::move(flavor.memory)),
        waker_(std::move(flavor.waker)),
        server_waker_storage_(std::move(flavor.server_waker)),
        server_waker_(server_waker_storage_ ? server_waker_storage_.get() : waker_.get()),
        logger_(options.logger),
        slots_(options.max_clients + kSpareSlots),
        watcher_([this](std::uint64_t id) { on_exit(id); }) {
    ctl_segment_ = memory_->create("ctl", sizeof(CtlBlock));
    ctl_ = reinterpret_cast<CtlBlock*>(ctl_segment_->data());
    ctl_->version = kLayoutVersion;
    ctl_->total_bytes = sizeof(CtlBlock);
    ctl_->server_pid = ::getpid();
    ctl_->hello_lock.init();
    server_waker_->init(ctl_->server_wake);
    for (auto& e : ctl_->hello) {
      e.state.store(kHelloFree);
      waker_->init(e.client_wake);
    }
    std::atomic_thread_fence(std::memory_order_release);
    ctl_->magic = kCtlMagic;  // last: clients check it before anything else
  }

  ~Server() override {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].state.load() != SlotState::kFree) destroy(i);
    }
    memory_->remove(ctl_segment_->name());
  }

  void poll(std::vector<ServerEvent>& events, Deadline deadline) override {
    server_waker_->attach_sleeper(ctl_->server_wake);
    wait_until(
        *server_waker_, ctl_->server_wake, spin_, [this] { return has_work(); }, deadline);
    woken_.store(false, std::memory_order_relaxed);
    for (std::size_t i = 0; i < kHelloEntries; ++i) serve_hello(i);
    const auto now = Clock::now();
    for (std::size_t i = 0; i < used_slots_; ++i) collect(i, now, events);
  }

  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    check_frame_size(frame.size());
    Slot* s = active_slot(id);
    if (s == nullptr || s->corrupt_down.load()) return SendResult::kGone;
    const SendResult r = put(*s, frame);
    if (r == SendResult::kSent) notify(*waker_, s->block->rx_wake, s->pid);
    return r;
  }

  std::size_t send_batch(ClientId id, std::span<const std::span<const std::byte>> frames,
                         SendResult& stopped) override {
    for (const auto& frame : frames) check_frame_size(frame.size());
    stopped = SendResult::kGone;
    Slot* s = active_slot(id);
    if (s == nullptr || s->corrupt_down.load()) return 0;
    std::size_t sent = 0;
    stopped = SendResult::kSent;
    for (const auto& frame : frames) {
      stopped = put(*s, frame);
      if (stopped != SendResult::kSent) break;
      ++sent;
    }
    // One doorbell for the whole batch: the client drains everything published before it.
    if (sent > 0) notify(*waker_, s->block->rx_wake, s->pid);
    return sent;
  }

  void close(ClientId id) override {
    const std::size_t index = id & 0xFFFFF;
    if (index >= slots_.size()) return;
    Slot& s = slots_[index];
    if (s.generation.load() != (id >> 20)) return;
    SlotState expected = SlotState::kActive;
    if (s.state.compare_exchange_strong(expected, SlotState::kClosing)) wake();
  }

  std::size_t buffered(ClientId id) override {
    Slot* s = active_slot(id);
    return s == nullptr ? 0 : s->down.pending();
  }

  void wake() override {
    woken_.store(true, std::memory_order_release);
    notify(*server_waker_, ctl_->server_wake, ::getpid());
  }

  nlohmann::json objects() const override {
    nlohmann::json j = memory_->objects();
    j["ctl"] = ctl_segment_->name();
    return j;
  }

 private:
  Slot* active_slot(ClientId id) {
    const std::size_t index = id & 0xFFFFF;
    if (index >= slots_.size()) return nullptr;
    Slot& s = slots_[index];
    if (s.state.load(std::memory_order_acquire) != SlotState::kActive) return nullptr;
    if (s.generation.load(std::memory_order_relaxed) != (id >> 20)) return nullptr;
    return &s;
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
          if (s.down.wait_for_room(frame.size())) continue;
          s.want_writable.store(true, std::memory_order_release);
          return SendResult::kFull;
        default:
          s.corrupt_down.store(true);
          wake();
          return SendResult::kGone;
      }
    }
    return SendResult::kFull;
  }

  // Runs on the PidWatcher thread.
  void on_exit(std::uint64_t id) {
    const std::size_t index = id & 0xFFFFF;
    if (index < slots_.size() && slots_[index].generation.load() == (id >> 20)) {
      slots_[index].died.store(true);
      wake();
    }
  }

  bool has_work() {
    if (woken_.load(std::memory_order_acquire)) return true;
    for (auto& e : ctl_->hello) {
      if (e.state.load(std::memory_order_acquire) == kHelloRequested) return true;
    }
    // Only up to the highest slot ever used: a spinning poll re-checks this many times.
    for (std::size_t i = 0; i < used_slots_; ++i) {
      Slot& s = slots_[i];
      switch (s.state.load(std::memory_order_acquire)) {
        case SlotState::kFree:
          break;
        case SlotState::kClosing:
          return true;
        case SlotState::kHandshake:
          if (s.died.load() || s.block->attached.load(std::memory_order_acquire)) return true;
          break;
        case SlotState::kActive:
          if (s.gone_reported) break;
          if (s.up.readable() || s.died.load() || s.corrupt_down.load() ||
              s.block->client_closed.load(std::memory_order_acquire)) {
            return true;
          }
          // Re-arms the client's "wake me when you read" flag at every check, not only once:
          // a read that frees too little consumes the flag, and the reads after it must still
          // wake us (or the writable event waits for the next sleep slice, half a second).
          if (s.want_writable.load(std::memory_order_acquire) &&
              s.down.wait_for_room(kMaxFrameBytes)) {
            return true;
          }
          break;
      }
    }
    return false;
  }

  void serve_hello(std::size_t i) {
    HelloEntry& e = ctl_->hello[i];
    const std::uint32_t state = e.state.load(std::memory_order_acquire);
    const auto now = Clock::now();
    if (state == kHelloFree) {
      hello_since_[i] = Deadline{};
      return;
    }
    if (hello_since_[i] == Deadline{}) hello_since_[i] = now;
    if (state != kHelloRequested) {
      // A client that claimed an entry and then vanished must not keep it forever.
      if (now - hello_since_[i] > kHandshakeTimeout) {
        e.state.store(kHelloFree, std::memory_order_release);
        hello_since_[i] = Deadline{};
      }
      return;
    }
    const pid_t pid = e.pid;
    const std::uint64_t nonce = e.nonce;
    const auto free_slot = std::find_if(slots_.begin(), slots_.end(), [](const Slot& s) {
      return s.state.load() == SlotState::kFree;
    });
    if (free_slot == slots_.end()) {
      e.state.store(kHelloRefused, std::memory_order_release);
      notify(*waker_, e.client_wake, pid);
      return;
    }
    UniqueFd pidfd;
    try {
      pidfd = pid > 0 ? open_pidfd(pid) : UniqueFd();
    } catch (const std::system_error& ex) {  // out of descriptors, say: refuse this one
      if (logger_) logger_->warn(std::string("refusing a client: ") + ex.what());
      e.state.store(kHelloRefused, std::memory_order_release);
      notify(*waker_, e.client_wake, pid);
      return;
    }
    if (!pidfd) {  // no such process: a hello nobody waits for
      e.state.store(kHelloFree, std::memory_order_release);
      return;
    }
    const std::size_t index = static_cast<std::size_t>(free_slot - slots_.begin());
    used_slots_ = std::max(used_slots_, index + 1);
    Slot& s = *free_slot;
    const std::uint32_t generation = s.generation.load() + 1;
    try {
      s.segment = memory_->create("c" + std::to_string(index) + "." + std::to_string(generation),
                                  sizeof(ClientBlock));
    } catch (const std::exception& ex) {
      if (logger_) logger_->warn(std::string("cannot create client segment: ") + ex.what());
      e.state.store(kHelloRefused, std::memory_order_release);
      notify(*waker_, e.client_wake, pid);
      return;
    }
    s.generation.store(generation);
    s.block = reinterpret_cast<ClientBlock*>(s.segment->data());
    ClientBlock& b = *s.block;
    b.version = kLayoutVersion;
    b.up_bytes = kUpRingBytes;
    b.down_bytes = kDownRingBytes;
    b.nonce = nonce;
    waker_->init(b.rx_wake);
    waker_->init(b.tx_wake);
    init_ring(b.up);
    init_ring(b.down);
    std::atomic_thread_fence(std::memory_order_release);
    b.magic = kClientMagic;
    s.up = RingReader(&b.up, b.up_data, kUpRingBytes);
    s.down = RingWriter(&b.down, b.down_data, kDownRingBytes);
    s.name = s.segment->name();
    s.name_removed = false;
    s.gone_reported = false;
    s.pid = pid;
    s.died.store(false);
    s.want_writable.store(false);
    s.corrupt_down.store(false);
    s.handshake_deadline = now + kHandshakeTimeout;
    try {
      watcher_.watch(make_id(index, generation), std::move(pidfd));
    } catch (const std::system_error& ex) {
      if (logger_) logger_->warn(std::string("refusing a client: ") + ex.what());
      destroy(index);
      e.state.store(kHelloRefused, std::memory_order_release);
      notify(*waker_, e.client_wake, pid);
      return;
    }
    s.state.store(SlotState::kHandshake, std::memory_order_release);
    std::memset(e.segment, 0, sizeof e.segment);
    std::memcpy(e.segment, s.name.data(), std::min(s.name.size(), sizeof e.segment - 1));
    e.state.store(kHelloGranted, std::memory_order_release);
    notify(*waker_, e.client_wake, pid);
  }

  void collect(std::size_t index, Deadline now, std::vector<ServerEvent>& events) {
    Slot& s = slots_[index];
    switch (s.state.load(std::memory_order_acquire)) {
      case SlotState::kFree:
        return;
      case SlotState::kClosing:
        destroy(index);
        return;
      case SlotState::kHandshake:
        if (s.block->attached.load(std::memory_order_acquire) != 0) {
          memory_->remove(s.name);  // both sides have it mapped; nothing can leak any more
          s.name_removed = true;
          s.state.store(SlotState::kActive, std::memory_order_release);
          ServerEvent ev;
          ev.kind = ServerEvent::Kind::kConnected;
          ev.client = id_of(index);
          ev.pid = s.pid;
          events.push_back(std::move(ev));
        } else if (s.died.load() || now > s.handshake_deadline) {
          destroy(index);
        }
        return;
      case SlotState::kActive:
        break;
    }
    if (s.gone_reported) return;
    const ClientId id = id_of(index);
    // Read `closed` before draining: frames published before the goodbye are all delivered.
    const bool closed = s.block->client_closed.load(std::memory_order_acquire) != 0;
    const bool died = s.died.load();
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
    if (s.up.producer_needs_wake()) notify(*waker_, s.block->tx_wake, s.pid);
    if (s.corrupt_down.load()) {
      return report_gone(index, ServerEvent::Gone::kMalformed, "down ring head corrupted", events);
    }
    if (drained && died) return report_gone(index, ServerEvent::Gone::kDied, "", events);
    if (drained && closed) return report_gone(index, ServerEvent::Gone::kClosed, "", events);
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
    watcher_.unwatch(id_of(index));
    if (s.block != nullptr) {
      s.block->server_closed.store(1, std::memory_order_release);
      notify(*waker_, s.block->rx_wake, s.pid);
      notify(*waker_, s.block->tx_wake, s.pid);
    }
    if (!s.name_removed && !s.name.empty()) memory_->remove(s.name);
    s.segment.reset();
    s.block = nullptr;
    s.name.clear();
    s.state.store(SlotState::kFree, std::memory_order_release);
  }

  std::unique_ptr<MemorySource> memory_;
  std::unique_ptr<Waker> waker_;
  std::unique_ptr<Waker> server_waker_storage_;
  Waker* server_waker_;
  const Logger* logger_;
  std::unique_ptr<Segment> ctl_segment_;
  CtlBlock* ctl_ = nullptr;
  std::vector<Slot> slots_;
  std::size_t used_slots_ = 0;  // I/O thread: slots_[used_slots_..] have never been used
  std::array<Deadline, kHelloEntries> hello_since_{};
  std::atomic<bool> woken_{false};
  SpinBudget spin_;
  PidWatcher watcher_;  // last: stopped first, before the slots it reports on go away
};

std::uint64_t random_nonce() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^ 1;
}

// Claims a free hello entry under the hello lock, waiting for one until `deadline`.
HelloEntry* claim_entry(CtlBlock& ctl, Deadline deadline) {
  for (;;) {
    {
      RobustLock lock(ctl.hello_lock, deadline);
      if (!lock.owns_lock()) {
        throw ConnectError(ConnectError::Kind::kTimeout, "cannot take the server's hello lock");
      }
      // kRecovered: a client died holding the lock. The entries are only ever changed with
      // single atomic stores, so there is nothing half-done to repair.
      for (auto& e : ctl.hello) {
        if (e.state.load(std::memory_order_acquire) == kHelloFree) {
          e.state.store(kHelloClaimed, std::memory_order_release);
          return &e;
        }
      }
    }
    if (Clock::now() >= deadline) {
      throw ConnectError(ConnectError::Kind::kTimeout, "all hello entries of the server are busy");
    }
    ::usleep(5'000);
  }
}

class Client final : public ClientConnection {
 public:
  Client(const ConnectOptions& o, Flavor flavor)
      : flavor_(std::move(flavor)),
        waker_(*flavor_.waker),
        server_pid_(o.server_pid),
        att_(Attachment::attach(o, flavor_)),
        block_(&att_.block()),
        up_(&block_->up, block_->up_data, kUpRingBytes),
        down_(&block_->down, block_->down_data, kDownRingBytes) {
    UniqueFd pidfd = open_pidfd(server_pid_);
    if (!pidfd) throw ConnectError(ConnectError::Kind::kNoServer, "the server process has exited");
    watcher_ = std::make_unique<PidWatcher>([this](std::uint64_t) {
      server_dead_.store(true);
      notify(waker_, block_->rx_wake, ::getpid());
      notify(waker_, block_->tx_wake, ::getpid());
    });
    watcher_->watch(0, std::move(pidfd));
  }

  ~Client() override {
    watcher_.reset();
    block_->client_closed.store(1, std::memory_order_release);
    att_.ring_server();
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
  pid_t server_pid_;
  Attachment att_;
  ClientBlock* block_;
  RingWriter up_;
  RingReader down_;
  SpinBudget rx_spin_, tx_spin_;
  std::atomic<bool> server_dead_{false};
  std::atomic<bool> woken_{false};
  std::atomic<bool> corrupt_{false};
  std::unique_ptr<PidWatcher> watcher_;
};

}  // namespace

Waker& server_waker(Flavor& flavor) {
  return flavor.server_waker ? *flavor.server_waker : *flavor.waker;
}

Attachment Attachment::attach(const ConnectOptions& o, Flavor& flavor) {
  Attachment a;
  a.server_waker_ = &server_waker(flavor);
  a.server_pid_ = o.server_pid;
  UniqueFd server_pidfd = open_pidfd(o.server_pid);
  if (!server_pidfd || pidfd_exited(server_pidfd.get())) {
    throw ConnectError(ConnectError::Kind::kNoServer, "the server process has exited");
  }
  std::string ctl_name;
  try {
    ctl_name = o.objects.at("ctl").get<std::string>();
  } catch (const nlohmann::json::exception&) {
    throw ConnectError(ConnectError::Kind::kOther, "instance.json lacks objects.ctl");
  }
  a.ctl_segment_ = flavor.memory->open(ctl_name, sizeof(CtlBlock));
  a.ctl_ = reinterpret_cast<CtlBlock*>(a.ctl_segment_->data());
  CtlBlock& ctl = *a.ctl_;
  if (ctl.magic != kCtlMagic || ctl.version != kLayoutVersion ||
      ctl.total_bytes != sizeof(CtlBlock) || ctl.server_pid != o.server_pid) {
    throw ConnectError(ConnectError::Kind::kOther,
                       "control segment " + ctl_name + " does not belong to this server");
  }
  Waker& waker = *flavor.waker;
  HelloEntry* entry = claim_entry(ctl, o.deadline);
  const std::uint64_t nonce = random_nonce();
  entry->pid = ::getpid();
  entry->nonce = nonce;
  waker.attach_sleeper(entry->client_wake);
  entry->state.store(kHelloRequested, std::memory_order_release);
  a.ring_server();
  SpinBudget spin;
  const auto answered = [&] {
    const auto st = entry->state.load(std::memory_order_acquire);
    return st == kHelloGranted || st == kHelloRefused;
  };
  while (!wait_until(waker, entry->client_wake, spin, answered,
                     std::min(o.deadline, deadline_after(std::chrono::milliseconds(100))))) {
    if (pidfd_exited(server_pidfd.get())) {
      throw ConnectError(ConnectError::Kind::kNoServer, "the server exited during the handshake");
    }
    if (Clock::now() >= o.deadline) {
      entry->state.store(kHelloFree, std::memory_order_release);
      throw ConnectError(ConnectError::Kind::kTimeout, "the server did not answer the handshake");
    }
  }
  if (entry->state.load(std::memory_order_acquire) == kHelloRefused) {
    entry->state.store(kHelloFree, std::memory_order_release);
    throw ConnectError(ConnectError::Kind::kRefused, "the server has no room for more clients");
  }
  const std::string name(entry->segment, strnlen(entry->segment, sizeof entry->segment));
  entry->state.store(kHelloFree, std::memory_order_release);
  a.segment_ = flavor.memory->open(name, sizeof(ClientBlock));
  a.block_ = reinterpret_cast<ClientBlock*>(a.segment_->data());
  ClientBlock& b = *a.block_;
  if (b.magic != kClientMagic || b.version != kLayoutVersion || b.nonce != nonce ||
      b.up_bytes != kUpRingBytes || b.down_bytes != kDownRingBytes) {
    throw ConnectError(ConnectError::Kind::kOther, "segment " + name + " is not ours");
  }
  b.attached.store(1, std::memory_order_release);
  a.ring_server();
  return a;
}

void Attachment::ring_server() {
  notify(*server_waker_, ctl_->server_wake, server_pid_);
}

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options, Flavor flavor) {
  return std::make_unique<Server>(options, std::move(flavor));
}

std::unique_ptr<ClientConnection> connect(const ConnectOptions& options, Flavor flavor) {
  return std::make_unique<Client>(options, std::move(flavor));
}

}  // namespace chat::transport::shm

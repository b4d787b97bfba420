// The msgq client connection. What the server granted at the door: two queues of this account
// alone (up and down, wire.hpp), the server bell's page and this client's bell eventfd.
//  - send(): msgsnd to the up queue with IPC_NOWAIT, then ring the server's bell (it is only
//    written while the server says it sleeps). The queue says nothing when it has room again:
//    while it is full, look again after a growing pause (from 50 us to 5 ms).
//  - receive() blocks in msgrcv on the down queue itself, so a frame wakes this thread and no
//    other. Whatever else must interrupt it -- wake(), its deadline, the server's death -- sets
//    a flag and puts a small wake-up message into that same queue (QueueBell, alarm.hpp); an
//    Alarm thread sleeps until the deadline and watches the server's pidfd. It does nothing
//    per message.
//  - The end: the server removes the down queue once it is read (EIDRM); a dead server removes
//    nothing, so once its pidfd says so, what is left in the queue is read and that is the end.
//    Our own end is a goodbye in the up queue, and the door connection closing with us.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "common/error.hpp"
#include "common/os.hpp"
#include "transport/bell.hpp"
#include "transport/msgq/alarm.hpp"
#include "transport/msgq/msgq.hpp"
#include "transport/msgq/stream.hpp"
#include "transport/msgq/sysv_queue.hpp"
#include "transport/msgq/wire.hpp"
#include "transport/pid_watch.hpp"

namespace chat::transport::msgq {
namespace {

using namespace std::chrono_literals;

[[noreturn]] void refuse(const std::string& why) {
  throw ConnectError(ConnectError::Kind::kOther, "the msgq server's grant is unusable: " + why);
}

// The bell page must be a sealed memfd at least a page long: a shorter or shrinkable file
// would make our mapping of it fault.
UniqueFd check_bell_page(UniqueFd fd) {
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 4096) {
    refuse("the bell page is not a page-sized file");
  }
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) refuse("the bell page is not sealed");
  return fd;
}

UniqueFd check_eventfd(UniqueFd fd) {
  char target[64] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(fd.get());
  if (!fd || ::readlink(link.c_str(), target, sizeof target - 1) < 0 ||
      std::strcmp(target, "anon_inode:[eventfd]") != 0) {
    refuse("the bell is not an eventfd");
  }
  return fd;
}

// A queue id from the channel, checked to be a keyless queue of ours made by the server.
int check_queue(const nlohmann::json& channel, const char* name, uid_t server_uid) {
  const auto it = channel.find(name);
  if (it == channel.end() || !it->is_number_integer()) {
    refuse(std::string("no ") + name + " queue id (an integer) in the channel");
  }
  const auto id = it->get<long long>();
  if (id < 0 || id > INT32_MAX) refuse(std::string("the ") + name + " queue id is no id");
  msqid_ds ds{};
  if (!stat_queue(static_cast<int>(id), ds)) {
    refuse(std::string("the ") + name + " queue does not exist: " + std::strerror(errno));
  }
  if (!is_queue_handed_to(ds, ::geteuid(), server_uid)) {
    refuse(std::string("the ") + name +
           " queue is not a keyless 0600 queue of this account made by the server");
  }
  return static_cast<int>(id);
}

class Client final : public ClientConnection {
 public:
  explicit Client(ConnectOptions o)
      : door_(std::move(o.pass.socket)),
        server_pidfd_(std::move(o.pass.server_pidfd)),
        doorbell_(open_doorbell(o.pass)) {
    if (!server_pidfd_ || pidfd_exited(server_pidfd_.get())) {
      throw ConnectError(
          ConnectError::Kind::kNoServer,
          "the server process (pid " + std::to_string(o.pass.server_pid) + ") has exited");
    }
    const nlohmann::json& channel = o.pass.channel;
    if (!channel.is_object() || !channel.contains(wire::kChannelVersion) ||
        channel[wire::kChannelVersion] != wire::kVersion) {
      refuse("not a msgq channel of version " + std::to_string(wire::kVersion));
    }
    up_ = check_queue(channel, wire::kChannelUp, o.pass.server_uid);
    down_ = check_queue(channel, wire::kChannelDown, o.pass.server_uid);
    if (up_ == down_) refuse("the up and the down queue are the same");
    wakeups_.emplace(down_, chat::random_nonce("msgq"));
    alarm_ = std::make_unique<Alarm>([this] { wakeups_->ring(); }, server_pidfd_.get(),
                                     [this] {
                                       server_dead_ = true;
                                       wakeups_->ring();
                                     });
  }

  ~Client() override {
    alarm_.reset();
    if (!closed_ && !server_dead_) {
      // Without it the server would take us for connected until the door connection closes,
      // which tells it less. A full queue empties fast unless the server is stuck.
      if (put_waiting(wire::kBye, {}, deadline_after(1s)) == SendResult::kSent) {
        doorbell_.ring_always();
      }
    }
  }

  SendResult send(std::span<const std::byte> frame, Deadline deadline) override {
    check_frame_size(frame.size());
    if (closed_) return SendResult::kGone;
    const SendResult r = put_waiting(wire::kData, frame, deadline);
    if (r == SendResult::kSent) doorbell_.ring();
    return r;
  }

  // Blocks in msgrcv itself: a frame wakes this thread and no other. wake(), the deadline and
  // the server's death put a wake-up into the queue after setting what is looked at here.
  ReceiveResult receive(Frame& frame, Deadline deadline) override {
    for (;;) {
      if (closed_) return ReceiveResult::kClosed;
      if (woken_.exchange(false)) return ReceiveResult::kTimeout;
      // A dead server removes nothing, and sends nothing more: what it sent before dying is in
      // our queue, and once that is read the connection is over.
      const bool dead = server_dead_;
      const bool block = !dead && Clock::now() < deadline;
      if (block) alarm_->set(deadline);
      const ssize_t n = stream::take(down_, *buffer_, block);
      if (n < 0) {
        if (errno == ENOMSG && !dead) return ReceiveResult::kTimeout;
        closed_ = true;  // EIDRM: the server removed our queue, the end of the connection
        continue;
      }
      const auto size = static_cast<std::size_t>(n);
      if (const auto f = stream::down_frame(*buffer_, size); !f.empty()) {
        frame.assign(f.begin(), f.end());
        return ReceiveResult::kFrame;
      }
      if (buffer_->mtype == wire::kWake) {
        wakeups_->take({buffer_->text, size});  // ours or not: look again
      }
      // Anything else is nothing the server sends: ignore it.
    }
  }

  bool server_alive() override { return !server_dead_ && !pidfd_exited(server_pidfd_.get()); }

  void wake() override {
    woken_ = true;
    wakeups_->ring();
  }

 private:
  static ClientBell open_doorbell(door::Pass& pass) {
    if (pass.fds.size() != wire::kGrantFds) {
      refuse(std::to_string(pass.fds.size()) + " descriptors, not " +
             std::to_string(wire::kGrantFds));
    }
    UniqueFd page = check_bell_page(std::move(pass.fds[wire::kFdBellPage]));
    UniqueFd event = check_eventfd(std::move(pass.fds[wire::kFdBellEvent]));
    return ClientBell(std::move(page), std::move(event));
  }

  // Puts one message into the up queue, waiting while it is full until `deadline`.
  SendResult put_waiting(long mtype, std::span<const std::byte> bytes, Deadline deadline) {
    if (pidfd_exited(server_pidfd_.get())) return SendResult::kGone;
    auto step = std::chrono::microseconds(50);
    for (;;) {
      const int err = stream::put(up_, mtype, bytes);
      if (err == 0) return SendResult::kSent;
      if (err != EAGAIN) return SendResult::kGone;  // EIDRM, EINVAL: the server closed it
      doorbell_.ring();  // it should be draining; a sleeping server is told once more
      if (Clock::now() >= deadline) return SendResult::kFull;
      pollfd p{server_pidfd_.get(), POLLIN, 0};
      if (poll_until(&p, 1, std::min(deadline, Clock::now() + step)) > 0) {
        return SendResult::kGone;
      }
      step = std::min<std::chrono::microseconds>(step * 2, 5ms);
    }
  }

  UniqueFd door_;  // kept open: closing it tells the server we are gone
  UniqueFd server_pidfd_;
  ClientBell doorbell_;  // rings the server after a send
  int up_ = -1;          // ours; created and removed by the server
  int down_ = -1;
  std::atomic<bool> server_dead_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> woken_{false};                                           // wake() was called
  std::unique_ptr<wire::Buffer> buffer_ = std::make_unique<wire::Buffer>();  // receive() only
  std::optional<QueueBell> wakeups_;  // wakes a receive() blocked in msgrcv on down_
  std::unique_ptr<Alarm> alarm_;      // rings wakeups_ at receive()'s deadline or server death
};

}  // namespace

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  if (!options.pass.socket) {
    throw ConnectError(ConnectError::Kind::kOther,
                       "the msgq server was not reached through its door (door.sock)");
  }
  return std::make_unique<Client>(std::move(options));
}

}  // namespace chat::transport::msgq

#include "transport/uds/uds.hpp"

#include <linux/sockios.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "common/log.hpp"
#include "transport/pid_watch.hpp"

namespace chat::transport::uds {
namespace {

using namespace std::chrono_literals;

// The kernel doubles this; the socket then holds well under kMaxTransportBufferBytes.
constexpr int kSendBufferBytes = 64 << 10;
constexpr std::size_t kFramesPerClientPerPoll = 64;
constexpr std::uint64_t kListenKey = 0;
constexpr std::uint64_t kWakeKey = 1;
constexpr ClientId kFirstClientId = 2;

// Receives one packet; returns its size, 0 on orderly close, -1 with errno. A packet larger
// than a frame is reported as -1/EMSGSIZE.
ssize_t receive_packet(int fd, Frame& frame, int flags) {
  frame.resize(kMaxFrameBytes);
  iovec iov{frame.data(), frame.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  const ssize_t n = retry_eintr([&] { return ::recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC); });
  if (n > 0 && (msg.msg_flags & MSG_TRUNC)) {
    errno = EMSGSIZE;
    return -1;
  }
  if (n >= 0) frame.resize(static_cast<std::size_t>(n));
  return n;
}

class Server final : public ServerEndpoint {
 public:
  // The door's connection is the channel: an admitted client keeps the socket it knocked on.
  explicit Server(const ListenOptions& o)
      : instance_(o.instance),
        door_(o.dir, o.access, o.logger),
        epoll_(::epoll_create1(EPOLL_CLOEXEC)),
        wake_fd_(make_eventfd("uds server")) {
    if (!epoll_) throw_system_error("epoll_create1", "uds server");
    add(door_.fd(), kListenKey, EPOLLIN);
    add(wake_fd_.get(), kWakeKey, EPOLLIN);
  }

  void poll(std::vector<ServerEvent>& events, Deadline deadline) override {
    {
      std::lock_guard lock(mutex_);
      closing_.clear();
    }
    epoll_event ready[64];
    const int n = retry_eintr(
        [&] { return ::epoll_wait(epoll_.get(), ready, 64, poll_timeout_ms(deadline)); });
    if (n < 0) throw_system_error("epoll_wait", door_.path().string());
    for (int i = 0; i < n; ++i) {
      const std::uint64_t key = ready[i].data.u64;
      if (key == kListenKey) {
        accept_all(events);
      } else if (key == kWakeKey) {
        drain_eventfd(wake_fd_.get());
      } else {
        serve(key, ready[i].events, events);
      }
    }
  }

  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    check_frame_size(frame.size());
    int fd;
    {
      std::lock_guard lock(mutex_);
      const auto it = clients_.find(id);
      if (it == clients_.end()) return SendResult::kGone;
      fd = it->second.fd.get();
    }
    const ssize_t n = retry_eintr(
        [&] { return ::send(fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL); });
    if (n == static_cast<ssize_t>(frame.size())) return SendResult::kSent;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
      std::lock_guard lock(mutex_);
      const auto it = clients_.find(id);
      if (it == clients_.end()) return SendResult::kGone;
      it->second.want_writable = true;
      modify(fd, id, EPOLLIN | EPOLLOUT);
      return SendResult::kFull;
    }
    return SendResult::kGone;
  }

  void close(ClientId id) override {
    std::lock_guard lock(mutex_);
    const auto it = clients_.find(id);
    if (it == clients_.end()) return;
    // The client reads what is queued, then end-of-file. The descriptor itself is closed by
    // the I/O thread, so that it cannot be reused while poll() may still be reading from it.
    ::shutdown(it->second.fd.get(), SHUT_RDWR);
    closing_.push_back(std::move(it->second));
    clients_.erase(it);
    wake();
  }

  void wake() override { signal_eventfd(wake_fd_.get()); }

  std::size_t buffered(ClientId id) override {
    std::lock_guard lock(mutex_);
    const auto it = clients_.find(id);
    int bytes = 0;
    // The memory of the frames the client has not read yet is charged to our socket.
    if (it == clients_.end() || ::ioctl(it->second.fd.get(), SIOCOUTQ, &bytes) != 0) return 0;
    return static_cast<std::size_t>(bytes);
  }

  nlohmann::json objects() const override { return {{"socket", door_.path().string()}}; }

 private:
  struct Conn {
    UniqueFd fd;
    UniqueFd pidfd;
    pid_t pid = 0;
    bool want_writable = false;
    bool gone_reported = false;
  };

  void add(int fd, std::uint64_t key, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = key;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw_system_error("epoll_ctl(ADD)", door_.path().string());
    }
  }

  void modify(int fd, std::uint64_t key, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = key;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev);
  }

  void accept_all(std::vector<ServerEvent>& events) {
    while (std::optional<door::Guest> guest = door_.accept()) {
      const int sndbuf = kSendBufferBytes;
      ::setsockopt(guest->socket.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
      door::Grant grant;
      grant.transport = "uds";
      grant.instance = instance_;
      // Nothing to hand over: the client already holds its end of this socket.
      if (!door::grant(guest->socket.get(), grant)) continue;
      Conn conn;
      conn.pid = guest->peer.pid;
      conn.pidfd = std::move(guest->pidfd);
      const ClientId id = next_id_++;
      add(guest->socket.get(), id, EPOLLIN);
      conn.fd = std::move(guest->socket);
      {
        std::lock_guard lock(mutex_);
        clients_.emplace(id, std::move(conn));
      }
      ServerEvent ev;
      ev.kind = ServerEvent::Kind::kConnected;
      ev.client = id;
      ev.pid = guest->peer.pid;
      ev.uid = guest->peer.uid;
      events.push_back(std::move(ev));
    }
  }

  void serve(ClientId id, std::uint32_t ready, std::vector<ServerEvent>& events) {
    int fd;
    {
      std::lock_guard lock(mutex_);
      const auto it = clients_.find(id);
      if (it == clients_.end() || it->second.gone_reported) return;
      fd = it->second.fd.get();
      if ((ready & EPOLLOUT) && it->second.want_writable) {
        it->second.want_writable = false;
        modify(fd, id, EPOLLIN);
        ServerEvent ev;
        ev.kind = ServerEvent::Kind::kWritable;
        ev.client = id;
        events.push_back(std::move(ev));
      }
    }
    if (!(ready & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    for (std::size_t k = 0; k < kFramesPerClientPerPoll; ++k) {
      ServerEvent ev;
      const ssize_t n = receive_packet(fd, ev.frame, MSG_DONTWAIT);
      if (n > 0) {
        ev.kind = ServerEvent::Kind::kFrame;
        ev.client = id;
        events.push_back(std::move(ev));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0 && errno == EMSGSIZE) {
        return gone(id, ServerEvent::Gone::kMalformed, "packet larger than a frame", events);
      }
      return gone(id, ServerEvent::Gone::kClosed, "", events);
    }
  }

  void gone(ClientId id, ServerEvent::Gone how, std::string detail,
            std::vector<ServerEvent>& events) {
    std::lock_guard lock(mutex_);
    const auto it = clients_.find(id);
    if (it == clients_.end()) return;
    it->second.gone_reported = true;
    // Stop reporting a closed socket as readable while the owner has not closed it yet.
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd.get(), nullptr);
    if (how == ServerEvent::Gone::kClosed && it->second.pidfd) {
      // The socket closes both when the client hangs up and when it dies; tell them apart.
      for (int i = 0; i < 20 && !pidfd_exited(it->second.pidfd.get()); ++i) ::usleep(500);
      if (pidfd_exited(it->second.pidfd.get())) how = ServerEvent::Gone::kDied;
    }
    ServerEvent ev;
    ev.kind = ServerEvent::Kind::kDisconnected;
    ev.client = id;
    ev.gone = how;
    ev.detail = std::move(detail);
    events.push_back(std::move(ev));
  }

  std::string instance_;
  door::Door door_;
  UniqueFd epoll_;
  UniqueFd wake_fd_;
  std::mutex mutex_;  // guards clients_ and closing_
  std::unordered_map<ClientId, Conn> clients_;
  std::vector<Conn> closing_;
  ClientId next_id_ = kFirstClientId;
};

class Client final : public ClientConnection {
 public:
  // The connection made at the door is the channel; the server is its peer.
  explicit Client(ConnectOptions o)
      : fd_(std::move(o.pass.socket)),
        wake_fd_(make_eventfd("uds client")),
        server_pidfd_(std::move(o.pass.server_pidfd)) {
    if (!fd_) throw ConnectError(ConnectError::Kind::kOther, "uds: no connection from the door");
    if (!server_pidfd_) {
      throw ConnectError(ConnectError::Kind::kNoServer, "the server process has exited");
    }
  }

  SendResult send(std::span<const std::byte> frame, Deadline deadline) override {
    check_frame_size(frame.size());
    for (;;) {
      const ssize_t n = retry_eintr([&] {
        return ::send(fd_.get(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      });
      if (n == static_cast<ssize_t>(frame.size())) return SendResult::kSent;
      if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)) {
        return SendResult::kGone;
      }
      pollfd p[2] = {{fd_.get(), POLLOUT, 0}, {server_pidfd_.get(), POLLIN, 0}};
      const int r = retry_eintr([&] { return ::poll(p, 2, poll_timeout_ms(deadline)); });
      if (r == 0) return SendResult::kFull;
      if (p[1].revents) return SendResult::kGone;
    }
  }

  ReceiveResult receive(Frame& frame, Deadline deadline) override {
    for (;;) {
      const ssize_t n = receive_packet(fd_.get(), frame, MSG_DONTWAIT);
      if (n > 0) return ReceiveResult::kFrame;
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        closed_ = true;
        return ReceiveResult::kClosed;
      }
      pollfd p[3] = {
          {fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}, {server_pidfd_.get(), POLLIN, 0}};
      const int r = retry_eintr([&] { return ::poll(p, 3, poll_timeout_ms(deadline)); });
      if (r == 0) return ReceiveResult::kTimeout;
      if (p[1].revents) {
        drain_eventfd(wake_fd_.get());
        return ReceiveResult::kTimeout;
      }
      if (p[2].revents && !(p[0].revents & POLLIN)) {
        server_dead_ = true;
        return ReceiveResult::kClosed;
      }
    }
  }

  bool server_alive() override {
    // Once the connection has closed, give the pidfd kDeathSettle to tell a death from a close.
    if (!server_dead_ && pidfd_exited(server_pidfd_.get(), closed_ ? kDeathSettle : 0ms)) {
      server_dead_ = true;
    }
    return !server_dead_;
  }

  void wake() override { signal_eventfd(wake_fd_.get()); }

 private:
  UniqueFd fd_;
  UniqueFd wake_fd_;
  UniqueFd server_pidfd_;
  std::atomic<bool> server_dead_{false};
  std::atomic<bool> closed_{false};
};

}  // namespace

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return std::make_unique<Server>(options);
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  return std::make_unique<Client>(std::move(options));
}

std::vector<std::string> cleanup(const CleanupOptions& options) {
  // The socket lives in the runtime dir, which the caller empties; nothing else to remove.
  (void)options;
  return {};
}

}  // namespace chat::transport::uds

#include "transport/door.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "common/error.hpp"
#include "common/log.hpp"
#include "common/os.hpp"
#include "transport/pid_watch.hpp"
#include "transport/transport.hpp"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5; glibc 2.36 does not name it yet
#endif

namespace chat::transport::door {
namespace {

constexpr int kBacklog = 128;
constexpr std::size_t kMaxRecordBytes = 4096;

UniqueFd peer_pidfd(int socket, pid_t pid) {
  int fd = -1;
  socklen_t len = sizeof fd;
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0) {
    UniqueFd owned(fd);
    // SO_PEERPIDFD does not set close-on-exec.
    ::fcntl(owned.get(), F_SETFD, FD_CLOEXEC);
    return owned;
  }
  // Older kernels: pidfd_open races with PID reuse only if the peer died this very moment.
  return open_pidfd(pid);
}

// Who the kernel lets through the instance dir `st`, in words: a client the kernel turned away
// cannot ask the server, but the dir's mode says what the server's --access set.
std::string who_may_enter(const struct stat& st) {
  const std::string owner = account_name(st.st_uid);
  if (st.st_mode & S_IXOTH) return "the server's --access does not admit this account";
  if (st.st_mode & S_IXGRP) {
    const group* g = ::getgrgid(st.st_gid);
    const std::string name = g != nullptr ? g->gr_name : std::to_string(st.st_gid);
    return "this chatd (--access=group:" + name + ") admits the account " + owner +
           " and members of group " + name;
  }
  return "this chatd (--access=user) admits only the account " + owner;
}

[[noreturn]] void fail(ConnectError::Kind kind, const std::string& what) {
  throw ConnectError(kind, what);
}

}  // namespace

Peer peer_of(int socket) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    throw_system_error("getsockopt SO_PEERCRED", "door");
  }
  Peer p;
  p.pid = cred.pid;
  p.uid = cred.uid;
  p.gid = cred.gid;
  std::vector<gid_t> groups(32);
  for (;;) {
    socklen_t bytes = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(socket, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &bytes) == 0) {
      groups.resize(bytes / sizeof(gid_t));
      break;
    }
    if (errno != ERANGE) throw_system_error("getsockopt SO_PEERGROUPS", "door");
    groups.resize(bytes / sizeof(gid_t) + 1);
  }
  p.groups = std::move(groups);
  return p;
}

Door::Door(const std::filesystem::path& dir, AccessPolicy access, const Logger* logger)
    : socket_(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)),
      spare_(::open("/dev/null", O_RDONLY | O_CLOEXEC)),
      path_(dir / kSocketName),
      access_(std::move(access)),
      uid_(::geteuid()),
      logger_(logger) {
  if (!socket_) throw_system_error("socket", path_.string());
  const UnixAddress addr = unix_address(path_);
  if (::bind(socket_.get(), addr.get(), addr.length) != 0)
    throw_system_error("bind", path_.string());
  // Before listen(): until then nobody can connect, whatever the mode bind left (umask).
  if (access_.kind() == AccessPolicy::Kind::kGroup &&
      ::lchown(path_.c_str(), static_cast<uid_t>(-1), access_.group()) != 0) {
    const int err = errno;
    ::unlink(path_.c_str());
    throw_system_error(
        "chown to group " + access_.group_name() + " (chatd's account must be a member)",
        path_.string(), err);
  }
  if (::fchmodat(AT_FDCWD, path_.c_str(), access_.door_mode(), 0) != 0) {
    const int err = errno;
    ::unlink(path_.c_str());
    throw_system_error("chmod", path_.string(), err);
  }
  if (::listen(socket_.get(), kBacklog) != 0) {
    const int err = errno;
    ::unlink(path_.c_str());
    throw_system_error("listen", path_.string(), err);
  }
}

Door::~Door() {
  ::unlink(path_.c_str());
}

std::optional<Guest> Door::accept() {
  for (;;) {
    UniqueFd conn(retry_eintr(
        [&] { return ::accept4(socket_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); }));
    if (!conn) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
      if ((errno == EMFILE || errno == ENFILE) && spare_) {
        // Take the client with the spare descriptor, tell it, and keep the spare for next time.
        spare_.reset();
        UniqueFd victim(::accept4(socket_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        const int err = errno;
        if (victim) refuse(victim.get(), "server_busy", "the server is out of file descriptors");
        victim.reset();
        spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        // accept(2) wants a free descriptor before it looks for a client: EMFILE does not mean
        // that anyone waits. If nobody did, we are done.
        if (!victim && (err == EAGAIN || err == EWOULDBLOCK)) return std::nullopt;
        if (logger_) logger_->warn("refused a client: out of file descriptors");
        continue;
      }
      if (errno == ECONNABORTED) continue;
      throw_system_error("accept", path_.string());
    }
    Guest g;
    try {
      g.peer = peer_of(conn.get());
      if (!access_.admits(g.peer, uid_)) {
        const std::string who = account_name(g.peer.uid);
        refuse(conn.get(), "permission_denied",
               "permission denied: this chatd (--access=" + access_.spelling() + ") admits " +
                   access_.describe(uid_) + ", not " + who);
        if (logger_) {
          logger_->info("refused pid " + std::to_string(g.peer.pid) + " of account " + who +
                        ": not admitted by --access=" + access_.spelling());
        }
        continue;
      }
      g.pidfd = peer_pidfd(conn.get(), g.peer.pid);
    } catch (const std::system_error& e) {
      refuse(conn.get(), "server_busy", e.what());
      if (logger_) logger_->warn(std::string("refused a client: ") + e.what());
      continue;
    }
    g.socket = std::move(conn);
    return g;
  }
}

namespace {

bool send_record(int socket, const std::string& text, std::span<const int> fds) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxGrantFds)];
  if (!fds.empty()) {
    if (fds.size() > kMaxGrantFds) throw std::length_error("door: too many descriptors in a grant");
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const ssize_t n = retry_eintr([&] { return ::sendmsg(socket, &msg, MSG_NOSIGNAL); });
  return n == static_cast<ssize_t>(text.size());
}

}  // namespace

bool grant(int socket, const Grant& g) {
  const nlohmann::json j = {{"answer", "granted"},
                            {"transport", g.transport},
                            {"instance", g.instance},
                            {"channel", g.channel}};
  return send_record(socket, j.dump(), g.fds);
}

void refuse(int socket, std::string_view code, std::string_view text) {
  const nlohmann::json j = {{"answer", "refused"}, {"code", code}, {"text", text}};
  send_record(socket, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), {});
}

Pass enter(const std::filesystem::path& dir, Deadline deadline) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) fail(ConnectError::Kind::kNoServer, dir.string() + " does not exist");
    if (errno == EACCES) {
      fail(ConnectError::Kind::kPermission,
           "permission denied: cannot reach " + dir.string() +
               " (the server's --access does not admit this account)");
    }
    fail(ConnectError::Kind::kOther, "lstat " + dir.string() + ": " + std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode))
    fail(ConnectError::Kind::kOther, dir.string() + " is a symlink; refusing it");
  if (!S_ISDIR(st.st_mode)) fail(ConnectError::Kind::kOther, dir.string() + " is not a directory");
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    fail(ConnectError::Kind::kOther,
         dir.string() + " is writable by accounts other than its owner; refusing it");
  }
  const std::filesystem::path path = dir / kSocketName;
  Pass pass;
  pass.socket.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!pass.socket) throw_system_error("socket", path.string());
  const UnixAddress addr = unix_address(path);
  for (;;) {
    if (retry_eintr([&] { return ::connect(pass.socket.get(), addr.get(), addr.length); }) == 0)
      break;
    switch (errno) {
      case ENOENT:
      case ECONNREFUSED:
        fail(ConnectError::Kind::kNoServer, "nothing listens on " + path.string());
      case EACCES:
      case EPERM:
        fail(ConnectError::Kind::kPermission, "permission denied: cannot connect to " +
                                                  path.string() + " (" + who_may_enter(st) + ")");
      case EAGAIN:  // the listen backlog is full: the server is busy accepting
        if (Clock::now() >= deadline)
          fail(ConnectError::Kind::kTimeout, "the server's door stays full");
        ::usleep(2'000);
        continue;
      default:
        throw_system_error("connect", path.string());
    }
  }
  const Peer server = peer_of(pass.socket.get());
  if (server.uid != st.st_uid) {
    fail(ConnectError::Kind::kOther, path.string() + " is served by uid " +
                                         std::to_string(server.uid) + ", not by the owner of " +
                                         dir.string() + "; refusing it");
  }
  pass.server_pid = server.pid;
  pass.server_uid = server.uid;
  pass.server_pidfd = peer_pidfd(pass.socket.get(), server.pid);

  // The answer: one record, perhaps with descriptors. Waits on the server's pidfd too.
  pollfd fds[2] = {{pass.socket.get(), POLLIN, 0}, {pass.server_pidfd.get(), POLLIN, 0}};
  for (;;) {
    const int n = retry_eintr(
        [&] { return ::poll(fds, pass.server_pidfd ? 2 : 1, poll_timeout_ms(deadline)); });
    if (n < 0) throw_system_error("poll", path.string());
    if (fds[0].revents != 0) break;
    if (fds[1].revents != 0) fail(ConnectError::Kind::kNoServer, "the server exited at the door");
    if (Clock::now() >= deadline)
      fail(ConnectError::Kind::kTimeout, "the server did not answer at the door");
  }
  std::string text(kMaxRecordBytes, '\0');
  iovec iov{text.data(), text.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxGrantFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t got =
      retry_eintr([&] { return ::recvmsg(pass.socket.get(), &msg, MSG_CMSG_CLOEXEC); });
  if (got < 0) throw_system_error("recvmsg", path.string());
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      pass.fds.emplace_back(fd);
    }
  }
  if (got == 0) fail(ConnectError::Kind::kRefused, "the server closed the door without an answer");
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    fail(ConnectError::Kind::kOther, "the server's answer at the door was truncated");
  }
  text.resize(static_cast<std::size_t>(got));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
    if (j.at("answer") == "refused") {
      const std::string code = j.at("code").get<std::string>();
      const std::string why = j.at("text").get<std::string>();
      fail(code == "permission_denied" ? ConnectError::Kind::kPermission
                                       : ConnectError::Kind::kRefused,
           code == "permission_denied" ? why : code + ": " + why);
    }
    pass.transport = j.at("transport").get<std::string>();
    pass.instance = j.at("instance").get<std::string>();
    pass.channel = j.at("channel");
  } catch (const nlohmann::json::exception& e) {
    fail(ConnectError::Kind::kOther,
         std::string("the server's answer at the door is malformed: ") + e.what());
  }
  return pass;
}

}  // namespace chat::transport::door

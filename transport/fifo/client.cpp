#include "transport/fifo/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "transport/fifo/stream.hpp"
#include "transport/fifo/wire.hpp"
#include "transport/pid_watch.hpp"

namespace chat::transport::fifo {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kReadChunk = 64 << 10;

[[noreturn]] void refuse(const std::string& why) {
  throw ConnectError(ConnectError::Kind::kOther, "the server's fifo channel is unusable: " + why);
}

// Checks that `fd` is a pipe the server made, open for `access` (O_RDONLY, O_WRONLY) only, and
// makes sure it does not block.
void check_pipe_end(int fd, int access, uid_t server_uid, const char* name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) refuse(std::string("fstat ") + name + ": " + std::strerror(errno));
  if (!S_ISFIFO(st.st_mode)) refuse(std::string(name) + " is not a pipe");
  if (st.st_uid != server_uid) refuse(std::string(name) + " is not the server's");
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || (flags & O_ACCMODE) != access) {
    refuse(std::string(name) + " is not open for " + (access == O_RDONLY ? "reading" : "writing") +
           " only");
  }
  if (::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    refuse(std::string("fcntl ") + name + ": " + std::strerror(errno));
  }
}

// Checks the grant: the description the server wrote, and the descriptors it passed.
void check_grant(const door::Pass& pass) {
  if (!pass.socket) refuse("the server did not come through the door");
  if (pass.transport != "fifo") refuse("the grant is for transport '" + pass.transport + "'");
  if (!pass.server_pidfd) {
    throw ConnectError(ConnectError::Kind::kNoServer,
                       "the server (pid " + std::to_string(pass.server_pid) + ") has exited");
  }
  const nlohmann::json& ch = pass.channel;
  const nlohmann::json fds = {wire::kUp, wire::kDown};
  if (!ch.is_object() || ch.value("version", nlohmann::json()) != wire::kVersion ||
      ch.value("fds", nlohmann::json()) != fds) {
    refuse("unknown channel description " +
           ch.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  if (pass.fds.size() != 2) {
    refuse(std::to_string(pass.fds.size()) + " descriptors instead of 2");
  }
  check_pipe_end(pass.fds[0].get(), O_WRONLY, pass.server_uid, "the up pipe");
  check_pipe_end(pass.fds[1].get(), O_RDONLY, pass.server_uid, "the down pipe");
  struct stat up {
  }, down{};
  if (::fstat(pass.fds[0].get(), &up) != 0 || ::fstat(pass.fds[1].get(), &down) != 0 ||
      (up.st_dev == down.st_dev && up.st_ino == down.st_ino)) {
    refuse("up and down are one pipe: this client would read its own frames");
  }
}

class Client final : public ClientConnection {
 public:
  explicit Client(door::Pass& pass)
      : wake_fd_(make_eventfd("fifo client")),
        server_pidfd_(std::move(pass.server_pidfd)),
        down_(std::move(pass.fds[1])),
        up_(std::move(pass.fds[0])),
        io_buffer_(kReadChunk) {}

  ~Client() override {
    std::lock_guard lock(send_mutex_);
    // Say goodbye (so the server does not take the hang-up for a death), unless a frame is still
    // half written and the pipe will not take the rest now.
    if (!tail_.empty() && write_pending(up_.get(), tail_) != Flow::kDone) return;
    const WireFrame bye(wire::Kind::kBye, {});
    std::size_t written = 0;
    write_now(up_.get(), bye.view(), written);
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
      std::size_t written = 0;
      const Flow flow = write_now(up_.get(), w.view().subspan(done), written);
      done += written;
      if (flow == Flow::kDone) return SendResult::kSent;
      if (flow == Flow::kBroken) return SendResult::kGone;  // EPIPE: the server is gone
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
        // The server broke the rules, or the pipe ended with every frame taken.
        if (r != FrameReader::Result::kNeedMore || at_end_) ended_ = true;
      }
      if (ended_) return ReceiveResult::kClosed;
      const Fill got = fill(down_.get(), reader_, io_buffer_, io_buffer_.size());
      // End-of-file: the server closed the connection, or died (server_alive() tells). What
      // came before it is still delivered.
      if (got.end) at_end_ = true;
      if (got.bytes > 0 || got.end) continue;
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
    for (;;) {
      const Flow flow = write_pending(up_.get(), tail_);
      if (flow == Flow::kDone) return SendResult::kSent;
      if (flow == Flow::kBroken) return SendResult::kGone;
      const SendResult r = wait_writable(deadline);
      if (r != SendResult::kSent) return r;
    }
  }

  UniqueFd wake_fd_;
  UniqueFd server_pidfd_;
  UniqueFd down_;  // reading end of our down pipe
  UniqueFd up_;    // writing end of our up pipe
  std::atomic<bool> server_dead_{false};

  std::mutex send_mutex_;  // guards tail_
  std::vector<std::byte> tail_;

  std::mutex receive_mutex_;  // guards the receiving state
  std::vector<std::byte> io_buffer_;
  FrameReader reader_;
  bool at_end_ = false;  // the pipe said end-of-file; frames read before it remain
  std::atomic<bool> ended_{false};
};

}  // namespace

std::unique_ptr<ClientConnection> make_client(ConnectOptions options) {
  check_grant(options.pass);
  // The door connection has done its work: the pipes and the server's pidfd say the rest.
  options.pass.socket.reset();
  return std::make_unique<Client>(options.pass);
}

}  // namespace chat::transport::fifo

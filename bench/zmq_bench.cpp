#include "bench/zmq_bench.hpp"

#ifdef IPCHAT_HAVE_ZMQ

#include <poll.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/child.hpp"
#include "bench/stats.hpp"

namespace chat::bench {
namespace {

constexpr char kPingPong[] = "zmq-pp.sock";
constexpr char kIn[] = "zmq-in.sock";
constexpr char kOut[] = "zmq-out.sock";
constexpr int kReplyTimeoutMs = 20'000;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + zmq_strerror(zmq_errno()));
}

std::string endpoint(const std::filesystem::path& base, const char* name) {
  return "ipc://" + (base / name).string();
}

// One ZeroMQ context; terminated on destruction (after every socket of it is closed).
class Context {
 public:
  Context() : ctx_(zmq_ctx_new()) {
    if (ctx_ == nullptr) fail("zmq_ctx_new");
  }
  ~Context() { zmq_ctx_term(ctx_); }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  void* get() const { return ctx_; }

 private:
  void* ctx_;
};

// One ZeroMQ socket; closed on destruction, without lingering.
class Socket {
 public:
  Socket(Context& ctx, int type) : s_(zmq_socket(ctx.get(), type)) {
    if (s_ == nullptr) fail("zmq_socket");
    set(ZMQ_LINGER, 0);
  }
  ~Socket() { zmq_close(s_); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  void* get() const { return s_; }
  void set(int option, int value) {
    if (zmq_setsockopt(s_, option, &value, sizeof value) != 0) fail("zmq_setsockopt");
  }
  void bind(const std::string& ep) {
    if (zmq_bind(s_, ep.c_str()) != 0) fail("zmq_bind " + ep);
  }
  void connect(const std::string& ep) {
    if (zmq_connect(s_, ep.c_str()) != 0) fail("zmq_connect " + ep);
  }

 private:
  void* s_;
};

// The socket file of an ipc:// endpoint this process binds; removed on destruction (libzmq
// leaves it behind when the process exits right after closing the socket). Declare it before
// the socket, so that the socket is closed first.
class SocketFile {
 public:
  SocketFile(const std::filesystem::path& base, const char* name) : path_(base / name) {}
  ~SocketFile() { ::unlink(path_.c_str()); }
  SocketFile(const SocketFile&) = delete;
  SocketFile& operator=(const SocketFile&) = delete;
  std::string endpoint() const { return "ipc://" + path_.string(); }

 private:
  std::filesystem::path path_;
};

// One zmq_msg_t; closed on destruction.
class Message {
 public:
  Message() { zmq_msg_init(&m_); }
  ~Message() { zmq_msg_close(&m_); }
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  zmq_msg_t* get() { return &m_; }
  const std::byte* data() { return static_cast<const std::byte*>(zmq_msg_data(&m_)); }
  std::size_t size() { return zmq_msg_size(&m_); }

 private:
  zmq_msg_t m_;
};

// True once stdin reached end-of-file (the bench's "clean up and exit"); reads what is there.
bool stdin_ended() {
  char buf[256];
  const ssize_t n = ::read(0, buf, sizeof buf);
  return n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN);
}

int echo(const PeerOptions& o) {
  const SocketFile file(o.runtime_dir, kPingPong);
  Context ctx;
  Socket s(ctx, ZMQ_PAIR);
  s.bind(file.endpoint());
  say("ready");
  zmq_pollitem_t items[2] = {{s.get(), 0, ZMQ_POLLIN, 0}, {nullptr, 0, ZMQ_POLLIN, 0}};
  for (;;) {
    if (zmq_poll(items, 2, -1) < 0) {
      if (zmq_errno() == EINTR) continue;
      fail("zmq_poll");
    }
    if (items[1].revents && stdin_ended()) return 0;
    while (items[0].revents) {
      Message m;
      if (zmq_msg_recv(m.get(), s.get(), ZMQ_DONTWAIT) < 0) break;
      if (zmq_msg_send(m.get(), s.get(), 0) < 0) fail("zmq_msg_send");
    }
  }
}

int broker(const PeerOptions& o) {
  const SocketFile in_file(o.runtime_dir, kIn), out_file(o.runtime_dir, kOut);
  Context ctx;
  Socket in(ctx, ZMQ_PULL);
  Socket out(ctx, ZMQ_PUB);
  in.set(ZMQ_RCVHWM, 0);
  out.set(ZMQ_SNDHWM, 0);
  in.bind(in_file.endpoint());
  out.bind(out_file.endpoint());
  say("ready");
  zmq_pollitem_t items[2] = {{in.get(), 0, ZMQ_POLLIN, 0}, {nullptr, 0, ZMQ_POLLIN, 0}};
  for (;;) {
    if (zmq_poll(items, 2, -1) < 0) {
      if (zmq_errno() == EINTR) continue;
      fail("zmq_poll");
    }
    if (items[1].revents && stdin_ended()) return 0;
    // Forward everything queued, zero-copy: the PUB socket shares one message among its
    // subscribers.
    for (;;) {
      Message m;
      if (zmq_msg_recv(m.get(), in.get(), ZMQ_DONTWAIT) < 0) break;
      if (zmq_msg_send(m.get(), out.get(), 0) < 0) fail("zmq_msg_send");
    }
  }
}

// Fan-out message: 'D', u32 sender index, i64 send time (ns), padding; 'J' to sync up.
constexpr std::size_t kHeader = 1 + 4 + 8;

int fan_client(const PeerOptions& o) {
  Context ctx;
  Socket push(ctx, ZMQ_PUSH);
  Socket sub(ctx, ZMQ_SUB);
  sub.set(ZMQ_RCVHWM, 0);
  if (zmq_setsockopt(sub.get(), ZMQ_SUBSCRIBE, "", 0) != 0) fail("zmq_setsockopt SUBSCRIBE");
  sub.connect(endpoint(o.runtime_dir, kOut));
  push.connect(endpoint(o.runtime_dir, kIn));
  // A subscription reaches the PUB side some time after connect: ring until anything comes
  // back, which proves ours is in place (the broker publishes every ring to everyone).
  for (int tries = 0;; ++tries) {
    if (tries == 2000) throw std::runtime_error("the broker never answered");
    const char ring = 'J';
    zmq_send(push.get(), &ring, 1, 0);
    zmq_pollitem_t item{sub.get(), 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 10) > 0) break;
  }
  const bool sender = o.window > 0;
  const std::uint32_t me = sender ? static_cast<std::uint32_t>(std::stoul(o.nick.substr(1))) : ~0u;
  say("ready");
  std::string line;
  if (!std::getline(std::cin, line) || line != "go") return 0;
  const std::int64_t cpu0 = own_cpu_ns();
  const std::size_t expected = o.senders * o.count;
  std::vector<std::int64_t> latencies;
  latencies.reserve(expected);
  std::vector<std::byte> frame(std::max(o.size, kHeader));
  std::size_t sent = 0, acked = 0, received = 0;
  while (received < expected || (sender && acked < o.count)) {
    while (sender && sent < o.count && sent - acked < o.window) {
      const std::int64_t ts = now_ns();
      frame[0] = std::byte{'D'};
      std::memcpy(frame.data() + 1, &me, 4);
      std::memcpy(frame.data() + 5, &ts, 8);
      if (zmq_send(push.get(), frame.data(), frame.size(), 0) < 0) fail("zmq_send");
      ++sent;
    }
    zmq_pollitem_t item{sub.get(), 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, kReplyTimeoutMs) <= 0) {
      say("error nothing received for 20 s after " + std::to_string(received) + " of " +
          std::to_string(expected));
      return 1;
    }
    for (;;) {
      Message m;
      if (zmq_msg_recv(m.get(), sub.get(), ZMQ_DONTWAIT) < 0) break;
      if (m.size() < kHeader || m.data()[0] != std::byte{'D'}) continue;
      std::uint32_t from;
      std::int64_t ts;
      std::memcpy(&from, m.data() + 1, 4);
      std::memcpy(&ts, m.data() + 5, 8);
      latencies.push_back(now_ns() - ts);
      ++received;
      if (from == me) ++acked;
    }
  }
  const std::int64_t end = now_ns();
  const std::int64_t cpu = own_cpu_ns() - cpu0;
  write_samples(o.samples_file, latencies);
  say("done " + std::to_string(end) + " " + std::to_string(cpu) + " " + std::to_string(received));
  while (std::getline(std::cin, line)) {
  }
  return 0;
}

class ZmqPinger final : public Pinger {
 public:
  explicit ZmqPinger(const std::filesystem::path& base) : socket_(ctx_, ZMQ_PAIR) {
    socket_.set(ZMQ_RCVTIMEO, kReplyTimeoutMs);
    socket_.connect(endpoint(base, kPingPong));
  }
  bool round_trip(std::span<const std::byte> frame, std::vector<std::byte>& reply) override {
    if (zmq_send(socket_.get(), frame.data(), frame.size(), 0) < 0) return false;
    reply.resize(frame.size() + 1);
    const int n = zmq_recv(socket_.get(), reply.data(), reply.size(), 0);
    if (n < 0) return false;
    reply.resize(static_cast<std::size_t>(n));
    return true;
  }

 private:
  Context ctx_;
  Socket socket_;
};

}  // namespace

bool zmq_available() {
  return true;
}

int run_zmq_peer(const PeerOptions& o) {
  if (o.role == "zmq-echo") return echo(o);
  if (o.role == "zmq-broker") return broker(o);
  if (o.role == "zmq-fan-client") return fan_client(o);
  std::cerr << "chat-bench: unknown peer role '" << o.role << "'\n";
  return 2;
}

std::unique_ptr<Pinger> connect_zmq_pinger(const std::filesystem::path& base) {
  return std::make_unique<ZmqPinger>(base);
}

}  // namespace chat::bench

#else  // no libzmq

#include <iostream>
#include <stdexcept>

namespace chat::bench {

bool zmq_available() {
  return false;
}

int run_zmq_peer(const PeerOptions&) {
  std::cerr << "zeromq: skipped (libzmq not found)\n";
  return 1;
}

std::unique_ptr<Pinger> connect_zmq_pinger(const std::filesystem::path&) {
  throw std::runtime_error("zeromq: skipped (libzmq not found)");
}

}  // namespace chat::bench

#endif

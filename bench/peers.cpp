#include "bench/peers.hpp"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <iostream>
#include <sstream>
#include <thread>

#include "bench/child.hpp"
#include "bench/stats.hpp"
#include "bench/zmq_bench.hpp"
#include "client/session.hpp"
#include "common/instance.hpp"
#include "common/log.hpp"
#include "transport/factory.hpp"

namespace chat::bench {
namespace proto = protocol;
namespace {

constexpr auto kReplyTimeout = std::chrono::seconds(20);

client::SessionOptions session_options(const PeerOptions& o, const std::string& nick) {
  client::SessionOptions so;
  so.nick = nick;
  so.room = o.room;
  so.instance = o.instance;
  so.runtime_dir = o.runtime_dir;
  so.transport = o.transport;
  so.timeout = std::chrono::seconds(20);  // a loaded 2-core machine starting 100+ clients
  return so;
}

// Reads stdin lines on a thread of its own; calls `on_eof` at end-of-file.
class StdinWatcher {
 public:
  template <typename F>
  explicit StdinWatcher(F on_eof)
      : thread_([this, on_eof] {
          for (std::string line; std::getline(std::cin, line);) {
          }
          eof_.store(true);
          on_eof();
        }) {}
  ~StdinWatcher() { thread_.join(); }
  StdinWatcher(const StdinWatcher&) = delete;
  StdinWatcher& operator=(const StdinWatcher&) = delete;
  bool eof() const { return eof_.load(); }

 private:
  std::atomic<bool> eof_{false};
  std::thread thread_;
};

int echo_server(const PeerOptions& o) {
  const transport::Backend* backend = transport::find_backend(o.transport);
  if (backend == nullptr) throw std::runtime_error("unknown transport " + o.transport);
  const Logger logger("chat-bench echo-server", LogLevel::kWarn);
  auto dir = InstanceDir::acquire(resolve_runtime_base(o.runtime_dir), o.instance);
  transport::ListenOptions lo;
  lo.dir = dir.path();
  lo.instance = o.instance;
  lo.max_clients = 4;
  lo.logger = &logger;
  auto endpoint = backend->listen(lo);
  {
    InstanceInfo info;
    info.instance = o.instance;
    info.transport = o.transport;
    info.pid = ::getpid();
    info.protocol = proto::kVersion;
    info.objects = endpoint->objects();
    dir.publish(info);
  }
  say("ready");
  std::atomic<bool> stop{false};
  {
    StdinWatcher stdin_watch([&] {
      stop.store(true);
      endpoint->wake();
    });
    std::vector<transport::ServerEvent> events;
    while (!stop.load()) {
      events.clear();
      endpoint->poll(events, deadline_after(std::chrono::seconds(1)));
      for (auto& ev : events) {
        if (ev.kind == transport::ServerEvent::Kind::kFrame) endpoint->send(ev.client, ev.frame);
        if (ev.kind == transport::ServerEvent::Kind::kDisconnected) endpoint->close(ev.client);
      }
    }
  }
  endpoint.reset();
  dir.remove();
  return 0;
}

// Waits for the next room message `nick` sent; counts evictions it sees on the way.
bool wait_own_echo(client::ChatSession& s, const std::string& nick, std::size_t& evictions) {
  proto::Message m;
  for (;;) {
    const auto r = s.receive(m, deadline_after(kReplyTimeout));
    if (r == client::ChatSession::Result::kTimeout) {
      say("error no echo within 20 s");
      return false;
    }
    if (r == client::ChatSession::Result::kClosed) {
      say("error the server closed the connection");
      return false;
    }
    if (const auto* rm = std::get_if<proto::RoomMessage>(&m)) {
      if (!rm->history && rm->from == nick) return true;
    } else if (const auto* p = std::get_if<proto::Parted>(&m)) {
      if (p->reason == proto::PartReason::kEvicted) ++evictions;
    } else if (std::holds_alternative<proto::Disconnected>(m)) {
      say("error disconnected by the server");
      return false;
    }
  }
}

int chat_client(const PeerOptions& o) {
  auto session = client::ChatSession::open(session_options(o, o.nick));
  say("ready");
  for (std::string line; std::getline(std::cin, line);) {
    std::istringstream in(line);
    std::string cmd, file;
    std::size_t count = 0, warmup = 0, size = 0;
    long long interval_us = 0;
    double seconds = 0;
    in >> cmd >> count >> warmup >> interval_us >> size >> seconds >> file;
    if (cmd != "run" || !in) {
      say("error bad command: " + line);
      return 1;
    }
    std::vector<std::int64_t> samples;
    samples.reserve(count > 0 ? count : 100'000);
    std::size_t evictions = 0;
    const std::int64_t cpu0 = own_cpu_ns();
    std::int64_t start = 0;
    timespec next{};
    ::clock_gettime(CLOCK_MONOTONIC, &next);
    for (std::size_t i = 0;; ++i) {
      if (i == warmup) start = now_ns();
      if (i >= warmup) {
        const std::size_t done = i - warmup;
        if (count > 0 && done >= count) break;
        if (seconds > 0 && double(now_ns() - start) >= seconds * 1e9) break;
      }
      if (interval_us > 0) {
        next.tv_nsec += interval_us * 1000;
        while (next.tv_nsec >= 1'000'000'000) {
          next.tv_nsec -= 1'000'000'000;
          ++next.tv_sec;
        }
        while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr) == EINTR) {
        }
      }
      const std::int64_t t0 = now_ns();
      if (!session->send(proto::Say{o.room, make_text(t0, i, size), false})) {
        say("error send failed: the connection is gone");
        return 1;
      }
      if (!wait_own_echo(*session, o.nick, evictions)) return 1;
      if (i >= warmup) samples.push_back(now_ns() - t0);
    }
    const std::int64_t elapsed = now_ns() - start;
    const std::int64_t cpu = own_cpu_ns() - cpu0;
    write_samples(file, samples);
    say("done " + std::to_string(samples.size()) + " " + std::to_string(elapsed) + " " +
        std::to_string(cpu) + " " + std::to_string(evictions));
  }
  return 0;
}

int fan_client(const PeerOptions& o) {
  auto session = client::ChatSession::open(session_options(o, o.nick));
  say("ready");
  std::string line;
  if (!std::getline(std::cin, line) || line != "go") return 0;
  const std::int64_t cpu0 = own_cpu_ns();
  const std::size_t expected = o.senders * o.count;
  const bool sender = o.window > 0;
  std::vector<std::int64_t> latencies;
  latencies.reserve(expected);
  std::size_t sent = 0, acked = 0, received = 0;
  proto::Message m;
  while (received < expected || (sender && acked < o.count)) {
    while (sender && sent < o.count && sent - acked < o.window) {
      if (!session->send(proto::Say{o.room, make_text(now_ns(), sent, o.size), false})) {
        say("error send failed: the connection is gone");
        return 1;
      }
      ++sent;
    }
    const auto r = session->receive(m, deadline_after(kReplyTimeout));
    if (r != client::ChatSession::Result::kMessage) {
      say(std::string("error ") +
          (r == client::ChatSession::Result::kTimeout ? "nothing received for 20 s"
                                                      : "the server closed the connection") +
          " after " + std::to_string(received) + " of " + std::to_string(expected));
      return 1;
    }
    if (const auto* rm = std::get_if<proto::RoomMessage>(&m)) {
      if (rm->history || rm->from.empty() || rm->from[0] != 's') continue;
      long long ts = 0;
      std::from_chars(rm->text.data(), rm->text.data() + rm->text.size(), ts);
      latencies.push_back(now_ns() - ts);
      ++received;
      if (rm->from == o.nick) ++acked;
    } else if (std::holds_alternative<proto::Disconnected>(m)) {
      say("error disconnected by the server (evicted?)");
      return 1;
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

int member(const PeerOptions& o) {
  auto session = client::ChatSession::open(session_options(o, o.nick));
  say("ready");
  StdinWatcher stdin_watch([&] { session->wake(); });
  proto::Message m;
  while (!stdin_watch.eof()) {
    const auto r = session->receive(m, deadline_after(std::chrono::seconds(1)));
    if (r == client::ChatSession::Result::kClosed) {
      say("closed");
      break;
    }
    if (r != client::ChatSession::Result::kMessage) continue;
    if (const auto* d = std::get_if<proto::Disconnected>(&m)) {
      say(d->reason == proto::DisconnectReason::kEvicted ? "evicted" : "closed");
      break;
    }
  }
  return 0;
}

int idle_host(const PeerOptions& o) {
  std::vector<std::unique_ptr<client::ChatSession>> sessions;
  for (std::size_t i = 0; i < o.clients; ++i) {
    sessions.push_back(client::ChatSession::open(session_options(o, o.nick + std::to_string(i))));
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (auto& s : sessions) {
    readers.emplace_back([&stop, &s] {
      proto::Message m;
      while (!stop.load()) {
        if (s->receive(m, kNoDeadline) == client::ChatSession::Result::kClosed) break;
      }
    });
  }
  say("ready");
  for (std::string line; std::getline(std::cin, line);) {
    if (line == "cpu") say("cpu " + std::to_string(own_cpu_ns()));
  }
  stop.store(true);
  for (auto& s : sessions) s->wake();
  for (auto& t : readers) t.join();
  return 0;
}

}  // namespace

void say(const std::string& line) {
  std::cout << line << std::endl;
}

std::string make_text(long long a, std::size_t b, std::size_t size) {
  std::string text = std::to_string(a) + " " + std::to_string(b) + " ";
  text.resize(std::max<std::size_t>(size, 1), 'x');
  return text;
}

int run_peer(const PeerOptions& o) {
  try {
    if (o.role == "echo-server") return echo_server(o);
    if (o.role == "chat-client") return chat_client(o);
    if (o.role == "fan-client") return fan_client(o);
    if (o.role == "member") return member(o);
    if (o.role == "idle-host") return idle_host(o);
    if (o.role.starts_with("zmq-")) return run_zmq_peer(o);
  } catch (const client::SessionError& e) {
    say(std::string("error ") + e.what());
    std::cerr << "chat-bench --peer=" << o.role << ": " << e.what() << "\n";
    return e.exit_code();
  } catch (const std::exception& e) {
    say(std::string("error ") + e.what());
    std::cerr << "chat-bench --peer=" << o.role << ": " << e.what() << "\n";
    return 1;
  }
  std::cerr << "chat-bench: unknown peer role '" << o.role << "'\n";
  return 2;
}

}  // namespace chat::bench

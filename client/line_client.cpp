#include "client/line_client.hpp"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "client/commands.hpp"
#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "common/unique_fd.hpp"

namespace chat::client {
namespace proto = protocol;
namespace {

constexpr std::uint64_t kFinalSync = 1;
constexpr auto kGoodbyeTimeout = std::chrono::seconds(3);
// A "line" longer than this without a newline is refused rather than buffered forever.
constexpr std::size_t kMaxLineBytes = 64 << 10;

// Writes whole lines to stdout and stderr from several threads.
class Printer {
 public:
  explicit Printer(const LineOptions& o) : o_(o) {}

  void event(const proto::Message& m) {
    std::string line = o_.jsonl ? to_jsonl(m, o_.render) : to_text(m, o_.render);
    if (line.empty()) return;
    line += '\n';
    std::lock_guard lock(mutex_);
    write_all(1, line);
    if (const auto* e = std::get_if<proto::Error>(&m); e != nullptr && o_.jsonl) {
      write_all(2, "chat: " + to_text(m, RenderContext{}) + "\n");
    }
  }

  void error(const std::string& code, const std::string& text) {
    const proto::Message m = proto::Error{code, text};
    if (o_.jsonl) {
      event(m);
    } else {
      std::lock_guard lock(mutex_);
      write_all(2, "chat: " + to_text(m, RenderContext{}) + "\n");
    }
  }

  void text(const std::string& s) {
    if (o_.jsonl) return event(proto::Notice{s});
    std::lock_guard lock(mutex_);
    write_all(1, s);
  }

 private:
  static void write_all(int fd, std::string_view s) {
    while (!s.empty()) {
      const ssize_t n = ::write(fd, s.data(), s.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // stdout went away; nothing useful left to do with output
      s.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  const LineOptions& o_;
  std::mutex mutex_;
};

// State shared by the input (main) thread and the receiving thread.
struct Shared {
  std::atomic<bool> closed{false};
  std::atomic<bool> shutdown_notice{false};
  std::atomic<bool> synced{false};
  std::atomic<bool> stop{false};
  UniqueFd event{make_eventfd("chat")};
  // Output the client made itself (errors it found, /help), waiting for the SyncAck of the
  // token it was filed under.
  std::mutex mutex;
  std::map<std::uint64_t, std::function<void()>> deferred;

  void signal() { signal_eventfd(event.get()); }
};

void receive_loop(ChatSession& session, Printer& out, Shared& shared) {
  ListAssembler lists;
  proto::Message m;
  while (!shared.stop.load()) {
    const auto r = session.receive(m, kNoDeadline);
    if (r == ChatSession::Result::kTimeout) continue;
    if (r == ChatSession::Result::kClosed) {
      shared.closed.store(true);
      shared.signal();
      return;
    }
    if (auto* ack = std::get_if<proto::SyncAck>(&m)) {
      if (ack->token == kFinalSync) {
        shared.synced.store(true);
        shared.signal();
        continue;
      }
      std::function<void()> show;
      {
        std::lock_guard lock(shared.mutex);
        if (auto node = shared.deferred.extract(ack->token)) show = std::move(node.mapped());
      }
      if (show) show();
      continue;
    }
    if (std::holds_alternative<proto::Disconnected>(m)) shared.shutdown_notice.store(true);
    if (auto complete = lists.feed(std::move(m))) out.event(*complete);
  }
}

class InputHandler {
 public:
  InputHandler(ChatSession& session, Printer& out, Shared& shared)
      : session_(session), out_(out), shared_(shared), state_(session.welcome().room) {}

  // Returns false once the user asked to quit.
  bool line(std::string_view text) {
    const Step step = state_.apply(parse_command(text));
    if (step.error) show_later([&out = out_, e = *step.error] { out.error(e.code, e.text); });
    if (step.help) show_later([&out = out_] { out.text(std::string(help_text())); });
    if (step.send) send(*step.send);
    return !step.quit && !lost_;
  }

  bool lost() const { return lost_; }

 private:
  bool send(const proto::Message& m) {
    if (!session_.send(m)) lost_ = true;
    return !lost_;
  }

  // Shows `what` once the server has answered everything sent before it, so output keeps
  // the order of the input lines: `printf '/join a\n/bad\n'` prints the join, then the error.
  void show_later(std::function<void()> what) {
    const std::uint64_t token = next_token_++;
    {
      std::lock_guard lock(shared_.mutex);
      shared_.deferred.emplace(token, what);
    }
    if (!lost_ && send(proto::Sync{token})) return;
    {
      std::lock_guard lock(shared_.mutex);
      shared_.deferred.erase(token);
    }
    what();
  }

  ChatSession& session_;
  Printer& out_;
  Shared& shared_;
  InputState state_;
  std::uint64_t next_token_ = kFinalSync + 1;
  bool lost_ = false;
};

int connection_lost(ChatSession& session, Printer& out, const Shared& shared) {
  const ConnectionLoss loss = explain_loss(shared.shutdown_notice.load(), session.server_alive());
  // The server's own notice was printed as it arrived.
  if (!shared.shutdown_notice.load()) out.event(proto::Disconnected{loss.reason});
  std::fprintf(stderr, "chat: connection lost: %s (instance %s)\n", loss.why.c_str(),
               session.instance().c_str());
  return kExitConnectionLost;
}

}  // namespace

int run_line_client(ChatSession& session, const LineOptions& options) {
  Printer out(options);
  Shared shared;
  out.event(session.welcome());
  std::thread receiver([&] { receive_loop(session, out, shared); });
  const auto finish = [&](int code) {
    shared.stop.store(true);
    session.wake();
    receiver.join();
    // Local output whose SyncAck never came (the connection ended first) is still shown.
    for (auto& [token, show] : shared.deferred) show();
    return code;
  };

  InputHandler input(session, out, shared);
  std::string pending;
  bool reading = true;      // stdin still open and no /quit yet
  bool quitting = false;    // Quit sent: wait for the server to close
  bool discarding = false;  // inside an overlong line: drop input up to its newline
  Deadline goodbye_deadline = kNoDeadline;
  char buf[64 << 10];
  for (;;) {
    if (shared.closed.load()) {
      if (quitting) return finish(kExitOk);
      return finish(connection_lost(session, out, shared));
    }
    if (input.lost()) {
      pollfd p{shared.event.get(), POLLIN, 0};
      retry_eintr([&] { return ::poll(&p, 1, 1000); });
      if (!shared.closed.load()) return finish(connection_lost(session, out, shared));
      continue;
    }
    if (!reading && !quitting && shared.synced.load()) {
      input.line("/quit");
      quitting = true;
      goodbye_deadline = deadline_after(kGoodbyeTimeout);
    }
    if (quitting && Clock::now() >= goodbye_deadline) return finish(kExitOk);
    pollfd fds[2] = {{shared.event.get(), POLLIN, 0}, {reading ? 0 : -1, POLLIN, 0}};
    const int n = retry_eintr(
        [&] { return ::poll(fds, 2, quitting ? poll_timeout_ms(goodbye_deadline) : -1); });
    if (n < 0) throw_system_error("poll", "chat");
    if (fds[0].revents & POLLIN) drain_eventfd(shared.event.get());
    if (reading && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      const ssize_t got = retry_eintr([&] { return ::read(0, buf, sizeof buf); });
      if (got > 0) {
        pending.append(buf, static_cast<std::size_t>(got));
        std::size_t start = 0;
        for (std::size_t nl; reading && (nl = pending.find('\n', start)) != std::string::npos;
             start = nl + 1) {
          if (discarding) {  // the tail of an overlong line
            discarding = false;
            continue;
          }
          if (!input.line(std::string_view(pending).substr(start, nl - start))) {
            reading = false;
            quitting = !input.lost();
            goodbye_deadline = deadline_after(kGoodbyeTimeout);
          }
        }
        pending.erase(0, start);
        if (pending.size() > kMaxLineBytes) {
          if (!discarding) out.error("too_long", "input line longer than 64 KiB; dropped");
          discarding = true;
          pending.clear();
        }
      } else {
        // End of input (or an unreadable stdin): deliver the last partial line, then make
        // sure the server has handled everything before saying goodbye.
        reading = false;
        if (!pending.empty() && !discarding && !input.line(pending)) {
          quitting = !input.lost();
          goodbye_deadline = deadline_after(kGoodbyeTimeout);
        } else if (!input.lost()) {
          session.send(proto::Sync{kFinalSync});
        }
        pending.clear();
      }
    }
  }
}

}  // namespace chat::client

#include "client/terminal_client.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

// readline.h uses FILE without including <stdio.h> itself.
#include <cstdio>
// clang-format off
#include <readline/readline.h>
#include <readline/history.h>
// clang-format on

#include <atomic>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "client/commands.hpp"
#include "common/error.hpp"
#include "common/event_fd.hpp"
#include "common/validate.hpp"

namespace chat::client {
namespace proto = protocol;
namespace {

// After /quit, how long to wait for the server to confirm before leaving anyway.
constexpr auto kGoodbyeTimeout = std::chrono::seconds(3);
// After a failed send, how long to wait for the receiving side to see why.
constexpr auto kLossTimeout = std::chrono::seconds(2);
constexpr int kHistoryLines = 1000;

// Events from the receiving thread to the main thread, the only one that touches the terminal.
class Mailbox {
 public:
  Mailbox() : ready_(make_eventfd("chat")) {}

  int fd() const { return ready_.get(); }

  void post(proto::Message&& m) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(m));
    }
    signal();
  }

  // The connection ended; nothing is posted after this.
  void close() {
    closed_.store(true);
    signal();
  }
  bool closed() const { return closed_.load(); }

  // Everything posted so far, oldest first.
  std::deque<proto::Message> take() {
    drain_eventfd(ready_.get());
    std::lock_guard lock(mutex_);
    return std::exchange(queue_, {});
  }

 private:
  void signal() { signal_eventfd(ready_.get()); }
  UniqueFd ready_;
  std::mutex mutex_;
  std::deque<proto::Message> queue_;
  std::atomic<bool> closed_{false};
};

void receive_loop(ChatSession& session, Mailbox& mailbox, const std::atomic<bool>& stop) {
  ListAssembler lists;
  proto::Message m;
  while (!stop.load()) {
    const auto r = session.receive(m, kNoDeadline);
    if (r == ChatSession::Result::kTimeout) continue;
    if (r == ChatSession::Result::kClosed) return mailbox.close();
    if (std::holds_alternative<proto::SyncAck>(m)) continue;
    if (auto complete = lists.feed(std::move(m))) mailbox.post(std::move(*complete));
  }
}

// What readline handed over since the main loop last looked.
struct Typed {
  std::vector<std::string> lines;
  bool eof = false;  // Ctrl+D on an empty line
};

// GNU readline is one global line editor whose callbacks carry no context pointer, so the
// line handler reaches its destination through this pointer; Readline sets it for its lifetime.
Typed* typed_sink = nullptr;

void on_line(char* line) {
  if (line == nullptr) {
    typed_sink->eof = true;
    return;
  }
  typed_sink->lines.emplace_back(line);
  std::free(line);  // readline allocated it with malloc
}

// Bound to Enter: wipes the prompt and the typed text from the screen before readline accepts
// the line, and tells readline the screen line is empty so it prints no newline. The text
// comes back as the server's echo, in its place in the conversation, so it is not shown twice.
int accept_line(int count, int key) {
  rl_clear_visible_line();
  rl_on_new_line();
  return rl_newline(count, key);
}

// Readline's terminal setup plus NOFLSH. Without it, Ctrl+C (or Ctrl+Z) makes the tty driver
// discard unread input, and a byte poll() has just reported can vanish before readline reads
// it: readline's blocking read() would then hang, with the SIGINT waiting unread in the
// signalfd, until the next key. readline restores the saved settings on deprep.
void prep_terminal(int meta_flag) {
  rl_prep_terminal(meta_flag);
  termios t{};
  if (::tcgetattr(0, &t) == 0 && !(t.c_lflag & NOFLSH)) {
    t.c_lflag |= NOFLSH;
    ::tcsetattr(0, TCSANOW, &t);
  }
}

// Readline in callback mode on stdin/stdout. The constructor takes over the terminal; the
// destructor gives it back as it was. Main thread only; at most one at a time.
class Readline {
 public:
  Readline(const std::string& prompt, Typed& sink) {
    // Signals arrive through the signalfd; readline must not install handlers of its own.
    rl_catch_signals = 0;
    rl_catch_sigwinch = 0;
    rl_change_environment = 0;
    rl_prep_term_function = prep_terminal;
    rl_readline_name = "chat";  // for `$if chat` in ~/.inputrc
    using_history();
    stifle_history(kHistoryLines);
    typed_sink = &sink;
    // Reads ~/.inputrc now, so that what follows overrides it.
    rl_initialize();
    // With bracketed paste, readline leaves a stray newline on the screen at Ctrl+D. Without
    // it, each pasted line is accepted on its own, which is what a chat wants anyway.
    rl_variable_bind("enable-bracketed-paste", "off");
    rl_callback_handler_install(prompt.c_str(), on_line);
    for (const char* name : {"emacs", "vi-insert", "vi-command"}) {
      if (Keymap map = rl_get_keymap_by_name(name)) {
        rl_bind_key_in_map('\r', accept_line, map);
        rl_bind_key_in_map('\n', accept_line, map);
      }
    }
  }

  ~Readline() {
    rl_clear_visible_line();
    std::fflush(rl_outstream);
    rl_callback_handler_remove();
    typed_sink = nullptr;
  }

  Readline(const Readline&) = delete;
  Readline& operator=(const Readline&) = delete;

  // Feeds readline what is waiting on stdin; lines and Ctrl+D end up in the sink.
  void read_input() { rl_callback_read_char(); }

  // Prints `text` (one or more lines, no final newline) above the input line: the prompt and
  // the typed text are erased, the text printed in their place, and both redrawn below it
  // with the cursor where it was.
  void print(const std::string& text) {
    rl_clear_visible_line();
    std::fputs(text.c_str(), rl_outstream);
    std::fputc('\n', rl_outstream);
    std::fflush(rl_outstream);
    rl_on_new_line();
    rl_redisplay();
  }

  void set_prompt(const std::string& prompt) {
    rl_clear_visible_line();
    rl_set_prompt(prompt.c_str());
    rl_on_new_line();
    rl_redisplay();
  }

  // Ctrl+Z: hands the terminal back to the shell, stops, and takes it again once continued.
  void suspend() {
    rl_clear_visible_line();
    std::fflush(rl_outstream);
    (*rl_deprep_term_function)();
    ::kill(::getpid(), SIGSTOP);
    (*rl_prep_term_function)(1);
    rl_on_new_line();
    rl_redisplay();
  }

  void resize() { rl_resize_terminal(); }

  void remember(const std::string& line) {
    const HIST_ENTRY* last =
        history_length > 0 ? history_get(history_base + history_length - 1) : nullptr;
    if (last == nullptr || line != last->line) add_history(line.c_str());
  }
};

class TerminalClient {
 public:
  TerminalClient(ChatSession& session, const RenderContext& render, UniqueFd signals)
      : session_(session),
        render_(render),
        signals_(std::move(signals)),
        input_(session.welcome().room),
        nick_(session.welcome().nick) {}

  int run() {
    show(to_text(session_.welcome(), render_));
    readline_.emplace(prompt(), typed_);
    shown_prompt_ = prompt();
    std::atomic<bool> stop{false};
    std::thread receiver([&] { receive_loop(session_, mailbox_, stop); });
    // Joins the receiver on every way out of run(), exceptions included.
    struct Join {
      ChatSession& session;
      std::atomic<bool>& stop;
      std::thread& thread;
      ~Join() {
        stop.store(true);
        session.wake();
        thread.join();
      }
    } join{session_, stop, receiver};
    return loop();
  }

 private:
  int loop() {
    for (;;) {
      if (mailbox_.closed()) {
        show_events();
        readline_.reset();
        return quitting_ ? kExitOk : connection_lost();
      }
      if (deadline_ != kNoDeadline && Clock::now() >= deadline_) {
        readline_.reset();
        return quitting_ ? kExitOk : connection_lost();
      }
      const bool reading = readline_.has_value();
      pollfd fds[3] = {
          {mailbox_.fd(), POLLIN, 0}, {signals_.get(), POLLIN, 0}, {reading ? 0 : -1, POLLIN, 0}};
      const int n = retry_eintr([&] { return ::poll(fds, 3, poll_timeout_ms(deadline_)); });
      if (n < 0) throw_system_error("poll", "chat");
      if (fds[1].revents & POLLIN) on_signal();
      if (fds[0].revents & POLLIN) show_events();
      if (reading && readline_ && (fds[2].revents & POLLIN)) {
        readline_->read_input();
        on_typed();
      } else if (reading && readline_ && (fds[2].revents & (POLLHUP | POLLERR))) {
        leave("");  // the terminal went away
      }
    }
  }

  // "[nick@room]> ". Both names come from the server, so they are neutralised like any text.
  std::string prompt() const {
    const std::string nick = sanitize_for_terminal(nick_);
    const std::string& room = input_.current_room();
    if (room.empty()) return "[" + nick + "]> ";
    const auto known = room_names_.find(fold_name(room));
    return "[" + nick + "@" +
           sanitize_for_terminal(known == room_names_.end() ? room : known->second) + "]> ";
  }

  void update_prompt() {
    if (!readline_) return;
    std::string p = prompt();
    if (p == shown_prompt_) return;
    readline_->set_prompt(p);
    shown_prompt_ = std::move(p);
  }

  void show(const std::string& text) {
    if (text.empty()) return;
    if (readline_) return readline_->print(text);
    std::fputs(text.c_str(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }

  void show_events() {
    std::string text;
    for (auto& m : mailbox_.take()) {
      track(m);
      const std::string line = to_text(m, render_);
      if (line.empty()) continue;
      if (!text.empty()) text += '\n';
      text += line;
    }
    // One redraw of the input line for a whole burst.
    show(text);
    update_prompt();
  }

  // Follows what the server says about this user: its nick and the rooms it is in, as the
  // server spells them, for the prompt.
  void track(const proto::Message& m) {
    if (const auto* n = std::get_if<proto::NickChanged>(&m)) {
      if (fold_name(n->old_nick) == fold_name(nick_)) nick_ = n->new_nick;
    } else if (const auto* j = std::get_if<proto::Joined>(&m)) {
      if (fold_name(j->nick) == fold_name(nick_)) room_names_[fold_name(j->room)] = j->room;
    } else if (const auto* p = std::get_if<proto::Parted>(&m)) {
      if (fold_name(p->nick) == fold_name(nick_)) room_names_.erase(fold_name(p->room));
    } else if (std::holds_alternative<proto::Disconnected>(m)) {
      shutdown_notice_ = true;
    }
  }

  void on_typed() {
    std::vector<std::string> lines = std::move(typed_.lines);
    typed_.lines.clear();
    for (const auto& line : lines) {
      if (!readline_) break;  // an earlier line quit
      if (!line.empty()) readline_->remember(line);
      on_input(line);
    }
    if (typed_.eof && readline_) leave("");
    update_prompt();
  }

  void on_input(std::string_view line) {
    const Step step = input_.apply(parse_command(line));
    if (step.error) show(to_text(*step.error, render_));
    if (step.help) {
      std::string help(help_text());
      if (!help.empty() && help.back() == '\n') help.pop_back();
      show(help);
    }
    if (step.quit) {
      const auto& q = std::get<proto::Quit>(*step.send);
      return leave(q.reason);
    }
    if (step.send && !session_.send(*step.send)) connection_broken();
  }

  void on_signal() {
    signalfd_siginfo si{};
    if (::read(signals_.get(), &si, sizeof si) != sizeof si) return;
    switch (si.ssi_signo) {
      case SIGWINCH:
        if (readline_) readline_->resize();
        break;
      case SIGTSTP:
        if (readline_) {
          readline_->suspend();
        } else {
          ::kill(::getpid(), SIGSTOP);
        }
        break;
      default:  // SIGINT (Ctrl+C), SIGTERM, SIGHUP
        leave("");
        break;
    }
  }

  // Says goodbye and gives the terminal back; the loop then waits for the server to close the
  // connection, printing what still arrives, for at most kGoodbyeTimeout.
  void leave(const std::string& reason) {
    if (quitting_) return;
    quitting_ = true;
    readline_.reset();
    if (!session_.send(proto::Quit{reason})) {
      deadline_ = Clock::now();
      return;
    }
    deadline_ = deadline_after(kGoodbyeTimeout);
  }

  void connection_broken() {
    readline_.reset();
    deadline_ = deadline_after(kLossTimeout);
  }

  int connection_lost() {
    const ConnectionLoss loss = explain_loss(shutdown_notice_, session_.server_alive());
    if (!shutdown_notice_) show(to_text(proto::Disconnected{loss.reason}, render_));
    std::fprintf(stderr, "chat: connection lost: %s (instance %s)\n", loss.why.c_str(),
                 session_.instance().c_str());
    return kExitConnectionLost;
  }

  ChatSession& session_;
  const RenderContext render_;
  UniqueFd signals_;
  Mailbox mailbox_;
  InputState input_;
  std::string nick_;
  std::map<std::string, std::string> room_names_;  // folded -> as the server spells it
  Typed typed_;
  std::optional<Readline> readline_;  // empty once the user left or the connection broke
  std::string shown_prompt_;
  bool quitting_ = false;
  bool shutdown_notice_ = false;
  Deadline deadline_ = kNoDeadline;  // for the goodbye or for the loss to be confirmed
};

}  // namespace

UniqueFd take_terminal_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGTSTP, SIGWINCH}) sigaddset(&set, s);
  if (const int e = pthread_sigmask(SIG_BLOCK, &set, nullptr); e != 0) {
    throw_system_error("pthread_sigmask", "terminal signals", e);
  }
  UniqueFd fd(::signalfd(-1, &set, SFD_CLOEXEC));
  if (!fd) throw_system_error("signalfd", "terminal signals");
  return fd;
}

int run_terminal_client(ChatSession& session, const RenderContext& render, UniqueFd signals) {
  TerminalClient client(session, render, std::move(signals));
  return client.run();
}

}  // namespace chat::client

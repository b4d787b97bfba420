#include "bench/child.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "common/error.hpp"

extern char** environ;

namespace chat::bench {
namespace {

// Both ends of a pipe, close-on-exec.
struct Pipe {
  UniqueFd read, write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_system_error("pipe2", "child stdio");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// posix_spawn's attribute and file-action objects, destroyed on every path.
class SpawnSetup {
 public:
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions_);
    posix_spawnattr_init(&attr_);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attr_);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attr_;
};

}  // namespace

Child::Child(std::vector<std::string> argv) : name_(argv.empty() ? "" : argv[0]) {
  Pipe in = make_pipe();
  Pipe out = make_pipe();
  SpawnSetup s;
  posix_spawn_file_actions_adddup2(&s.actions_, in.read.get(), 0);
  posix_spawn_file_actions_adddup2(&s.actions_, out.write.get(), 1);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  // We block the transports' doorbell signals; the child must start from a clean slate.
  posix_spawnattr_setsigmask(&s.attr_, &none);
  posix_spawnattr_setsigdefault(&s.attr_, &all);
  posix_spawnattr_setflags(&s.attr_, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const int rc = ::posix_spawn(&pid_, cargv[0], &s.actions_, &s.attr_, cargv.data(), environ);
  if (rc != 0) throw_system_error("posix_spawn", name_, rc);
  stdin_ = std::move(in.write);
  stdout_ = std::move(out.read);
}

Child::~Child() {
  close_stdin();  // a peer cleans up and exits at end-of-file; give it a moment to
  if (!wait(deadline_after(std::chrono::seconds(2)))) {
    signal(SIGCONT);  // a stopped child must be able to die
    signal(SIGKILL);
    wait(deadline_after(std::chrono::seconds(10)));
  }
}

bool Child::send_line(std::string_view line) {
  if (!stdin_) return false;
  std::string data(line);
  data += '\n';
  std::string_view rest = data;
  while (!rest.empty()) {
    const ssize_t n = retry_eintr([&] { return ::write(stdin_.get(), rest.data(), rest.size()); });
    if (n <= 0) return false;
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::optional<std::string> Child::read_line(Deadline deadline) {
  for (;;) {
    const auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    if (eof_ || !stdout_) return std::nullopt;
    pollfd p{stdout_.get(), POLLIN, 0};
    const int r = retry_eintr([&] { return ::poll(&p, 1, poll_timeout_ms(deadline)); });
    if (r == 0) return std::nullopt;
    char buf[4096];
    const ssize_t n = retry_eintr([&] { return ::read(stdout_.get(), buf, sizeof buf); });
    if (n <= 0) {
      eof_ = true;
      continue;
    }
    buffer_.append(buf, static_cast<std::size_t>(n));
  }
}

std::optional<std::string> Child::expect(std::string_view prefix, Deadline deadline) {
  while (auto line = read_line(deadline)) {
    if (line->starts_with(prefix)) return line;
  }
  return std::nullopt;
}

void Child::signal(int signo) {
  if (!status_) ::kill(pid_, signo);
}

std::optional<int> Child::wait(Deadline deadline) {
  while (!status_) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
    if (r < 0 && errno != EINTR) {
      status_ = -1;  // not our child any more: nothing to wait for
      break;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return status_;
}

bool Child::running() {
  return !wait(Clock::now()).has_value();
}

std::int64_t Child::cpu_ns() const {
  return status_ ? -1 : process_cpu_ns(pid_);
}

std::int64_t process_cpu_ns(pid_t pid) {
  // The kernel's CPU clock of another process counts in ns over every thread; /proc/PID/stat
  // counts in clock ticks (10 ms), too coarse for the idle scenario. Fall back to it anyway.
  clockid_t clock;
  timespec ts{};
  if (::clock_getcpuclockid(pid, &clock) == 0 && ::clock_gettime(clock, &ts) == 0) {
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return -1;
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(paren + 2));
  std::string f;
  long long utime = 0, stime = 0;
  // Fields after the command: state(3) ... utime(14) stime(15).
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoll(f);
    if (i == 15) stime = std::stoll(f);
  }
  const long hz = ::sysconf(_SC_CLK_TCK);
  return (utime + stime) * (1'000'000'000LL / (hz > 0 ? hz : 100));
}

std::int64_t own_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

}  // namespace chat::bench

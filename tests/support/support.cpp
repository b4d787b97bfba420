#include "tests/support/support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "common/instance.hpp"
#include "transport/factory.hpp"
#include "transport/names.hpp"

extern char** environ;

namespace chat::test {
namespace fs = std::filesystem;

fs::path binary(const std::string& name) {
  static const std::map<std::string, fs::path> kPaths = {
      {"chatd", IPCHAT_CHATD}, {"chat", IPCHAT_CHAT}, {"transport_peer", IPCHAT_TRANSPORT_PEER}};
  return kPaths.at(name);
}

TempRuntime::TempRuntime() {
  char tmpl[] = "/tmp/ipchat-test.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  base_ = tmpl;
  std::random_device rd;
  instance_ = "t" + std::to_string(::getpid()) + "-" + std::to_string(rd() % 100000);
}

TempRuntime::~TempRuntime() {
  // A test that failed half-way may have left a killed server's objects outside the
  // directory (/dev/shm, SysV); remove them the way a restarting chatd would, first.
  std::error_code ec;
  if (fs::exists(dir(), ec)) {
    transport::CleanupOptions co;
    co.dir = dir();
    try {
      std::ifstream in(dir() / "instance.json");
      const auto info = instance_info_from_json(nlohmann::json::parse(in));
      co.dead_server_pid = info.pid;
      co.objects = info.objects;
    } catch (const std::exception&) {
      // no (readable) instance.json: the backends find their objects by name alone
    }
    for (const auto& backend : transport::backends()) {
      try {
        backend.cleanup(co);
      } catch (const std::exception&) {
        // best effort: this is already the failure path of a test
      }
    }
  }
  fs::remove_all(base_, ec);
}

std::vector<std::string> TempRuntime::args() const {
  return {"--runtime-dir=" + base_.string(), "--instance=" + instance_};
}

Process::Process(std::vector<std::string> argv, std::map<std::string, std::string> env) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe2 failed");
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  // The child starts with no blocked signals and default dispositions, whatever the test
  // process has blocked for its own transports.
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<std::string> envs;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    if (!env.contains(kv.substr(0, kv.find('=')))) envs.push_back(kv);
  }
  for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> cargv, cenv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (auto& e : envs) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  const int rc = ::posix_spawn(&pid_, cargv[0], &fa, &attr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    ::close(err[0]);
    throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  }
  stdin_fd_ = in[1];
  out_thread_ = std::thread([this, fd = out[0]] { collect(fd, out_); });
  err_thread_ = std::thread([this, fd = err[0]] { collect(fd, err_); });
}

Process::~Process() {
  if (running()) {
    kill(SIGKILL);
    wait(10s);
  }
  close_stdin();
  if (out_thread_.joinable()) out_thread_.join();
  if (err_thread_.joinable()) err_thread_.join();
}

void Process::collect(int fd, std::string& into) {
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard lock(mutex_);
    into.append(buf, static_cast<std::size_t>(n));
    changed_.notify_all();
  }
  ::close(fd);
}

void Process::write(const std::string& data) {
  std::string_view rest = data;
  while (!rest.empty()) {
    const ssize_t n = ::write(stdin_fd_, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("write to child stdin failed");
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

void Process::close_stdin() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

void Process::kill(int signo) {
  if (!status_) ::kill(pid_, signo);
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!status_) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      // Everything it wrote is collected once its pipes reach end-of-file.
      if (out_thread_.joinable()) out_thread_.join();
      if (err_thread_.joinable()) err_thread_.join();
      break;
    }
    if (std::chrono::steady_clock::now() >= end) return std::nullopt;
    ::usleep(2000);
  }
  return status_;
}

bool Process::running() {
  return !wait(0ms).has_value();
}

std::string Process::out() const {
  std::lock_guard lock(mutex_);
  return out_;
}

std::string Process::err() const {
  std::lock_guard lock(mutex_);
  return err_;
}

std::vector<std::string> Process::out_lines() const {
  return lines_of(out());
}

bool Process::wait_out(const std::function<bool(const std::string&)>& pred,
                       std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return pred(out_); });
}

bool Process::wait_out_contains(const std::string& needle, std::chrono::milliseconds timeout) {
  return wait_out([&](const std::string& s) { return s.find(needle) != std::string::npos; },
                  timeout);
}

bool Process::wait_err_contains(const std::string& needle, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return err_.find(needle) != std::string::npos; });
}

std::unique_ptr<Process> start_chatd(const TempRuntime& rt, const std::string& transport,
                                     std::vector<std::string> extra) {
  std::vector<std::string> argv = {binary("chatd").string(), "--transport=" + transport};
  for (auto& a : rt.args()) argv.push_back(a);
  for (auto& a : extra) argv.push_back(a);
  auto p = std::make_unique<Process>(argv);
  const auto end = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < end) {
    try {
      // The pid too: until the new server has published, instance.json is a dead one's.
      const auto live = find_live_instance(rt.base(), rt.instance());
      if (live && live->pid == p->pid()) return p;
    } catch (const std::exception&) {
      // not there yet
    }
    if (!p->running()) break;
    std::this_thread::sleep_for(5ms);
  }
  throw std::runtime_error("chatd did not start: " + p->err());
}

std::vector<std::string> leftovers(const TempRuntime& rt, const std::vector<pid_t>& pids) {
  std::vector<std::string> found = transport::leftover_ipc_objects(rt.dir(), pids, rt.created());
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(rt.base(), ec)) {
    found.push_back(e.path().string());
  }
  return found;
}

void check_no_leftovers(const TempRuntime& rt, const std::vector<pid_t>& pids) {
  const auto left = leftovers(rt, pids);
  BOOST_CHECK_MESSAGE(left.empty(), "left behind: " << (left.empty() ? "" : left.front()));
}

pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

char thread_state(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return 0;
  // "TID (COMM) STATE ...": COMM may hold anything, ')' included; the last ')' ends it.
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return 0;
  return stat[close + 2];
}

namespace {

// Waits until `all_asleep()` holds on 5 looks in a row, 2 ms apart; false at `timeout`.
bool wait_asleep(const std::function<std::optional<bool>()>& all_asleep,
                 std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  int in_a_row = 0;
  while (std::chrono::steady_clock::now() < end) {
    const auto asleep = all_asleep();
    if (!asleep) return false;  // gone
    in_a_row = *asleep ? in_a_row + 1 : 0;
    if (in_a_row >= 5) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

}  // namespace

bool wait_thread_sleeping(pid_t tid, std::chrono::milliseconds timeout) {
  return wait_asleep(
      [tid]() -> std::optional<bool> {
        const char state = thread_state(tid);
        if (state == 0 || state == 'Z' || state == 'X') return std::nullopt;
        return state == 'S';
      },
      timeout);
}

bool wait_others_sleeping(std::chrono::milliseconds timeout) {
  const pid_t self = ::gettid();
  return wait_asleep(
      [self]() -> std::optional<bool> {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator("/proc/self/task", ec)) {
          const pid_t tid = static_cast<pid_t>(std::stol(e.path().filename().string()));
          if (tid == self) continue;
          const char state = thread_state(tid);
          if (state != 0 && state != 'S' && state != 'Z' && state != 'X') return false;
        }
        return true;
      },
      timeout);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace chat::test

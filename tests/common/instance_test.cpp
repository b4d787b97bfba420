// The instance runtime directory (common/instance.hpp): creation, permissions, the lock held
// across processes, instance.json, and what a crashed server leaves behind.
#include "common/instance.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <thread>

#include "common/error.hpp"
#include "tests/support/support.hpp"

namespace chat {
namespace fs = std::filesystem;
using test::TempRuntime;

namespace {

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) throw std::runtime_error("lstat " + p.string());
  return st.st_mode & 07777;
}

// Sets the umask for one scope.
class UmaskScope {
 public:
  explicit UmaskScope(mode_t mask) : old_(::umask(mask)) {}
  ~UmaskScope() { ::umask(old_); }
  UmaskScope(const UmaskScope&) = delete;
  UmaskScope& operator=(const UmaskScope&) = delete;

 private:
  mode_t old_;
};

// Sets (or with nullptr unsets) an environment variable for one scope.
class EnvScope {
 public:
  EnvScope(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~EnvScope() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  EnvScope(const EnvScope&) = delete;
  EnvScope& operator=(const EnvScope&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

InstanceInfo sample_info(const std::string& instance, pid_t pid) {
  InstanceInfo info;
  info.instance = instance;
  info.transport = "cond";
  info.pid = pid;
  info.protocol = 1;
  info.objects = {{"ctl", "/ipchat.test.ctl"}, {"count", 3}};
  return info;
}

// Runs `f` in a forked child and returns its exit code (f's return value; 99 if it threw
// something unexpected). Nothing in the child touches Boost.Test.
template <typename F>
int in_child(F&& f) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 99;
    try {
      code = f();
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A child process that acquires the instance, publishes, says so through a pipe, and holds
// the lock until release() (or the object's destruction); then it exits without cleaning up,
// like a server killed with SIGKILL.
class HoldingChild {
 public:
  HoldingChild(const fs::path& base, const std::string& instance) {
    int ready[2], release[2];
    if (::pipe(ready) != 0 || ::pipe(release) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::close(ready[0]);
      ::close(release[1]);
      try {
        auto dir = InstanceDir::acquire(base, instance);
        dir.publish(sample_info(instance, ::getpid()));
        char c = 'r';
        if (::write(ready[1], &c, 1) != 1) ::_exit(2);
        while (::read(release[0], &c, 1) < 0 && errno == EINTR) {
        }
        ::_exit(0);  // no remove(), no destructors: a crash
      } catch (...) {
        ::_exit(1);
      }
    }
    ::close(ready[1]);
    ::close(release[0]);
    release_fd_ = release[1];
    char c;
    ssize_t n;
    while ((n = ::read(ready[0], &c, 1)) < 0 && errno == EINTR) {
    }
    ::close(ready[0]);
    if (n != 1) throw std::runtime_error("holding child failed to acquire the instance");
  }
  ~HoldingChild() { release(); }
  HoldingChild(const HoldingChild&) = delete;
  HoldingChild& operator=(const HoldingChild&) = delete;

  pid_t pid() const { return pid_; }
  // Lets the child exit and reaps it.
  void release() {
    if (release_fd_ < 0) return;
    ::close(release_fd_);
    release_fd_ = -1;
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }

 private:
  pid_t pid_ = -1;
  int release_fd_ = -1;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(instance)

BOOST_AUTO_TEST_CASE(acquire_creates_private_dirs_whatever_the_umask) {
  // umask 0 must not open anything up; 0777 and 0277 would strip bits the owner needs.
  TempRuntime rt;
  const mode_t before = ::umask(022);
  ::umask(before);
  for (const mode_t mask : {0000, 0777, 0277}) {
    const fs::path base = rt.base() / ("base" + std::to_string(mask));
    {
      UmaskScope scope(mask);
      auto dir = InstanceDir::acquire(base, "inst");
      BOOST_TEST(dir.path() == base / "inst");
      BOOST_TEST(dir.instance() == "inst");
      BOOST_TEST(mode_of(base) == 0700u, "umask " << std::oct << mask);
      BOOST_TEST(mode_of(base / "inst") == 0700u, "umask " << std::oct << mask);
      BOOST_TEST(mode_of(base / "inst" / "lock") == 0600u, "umask " << std::oct << mask);
      dir.publish(sample_info("inst", ::getpid()));
      BOOST_TEST(mode_of(base / "inst" / "instance.json") == 0600u, "umask " << std::oct << mask);
      BOOST_TEST(!fs::exists(base / "inst" / "instance.json.tmp"));
      BOOST_TEST(find_live_instance(base, "inst").has_value());
      dir.remove();
    }
    const mode_t now = ::umask(before);
    BOOST_TEST(now == before);  // the scope put it back
  }
}

BOOST_AUTO_TEST_CASE(acquire_tightens_an_existing_lock_file) {
  TempRuntime rt;
  fs::create_directory(rt.dir());
  fs::permissions(rt.dir(), fs::perms::owner_all);
  std::ofstream(rt.dir() / "lock") << "";
  fs::permissions(rt.dir() / "lock", fs::perms::owner_read | fs::perms::owner_write |
                                         fs::perms::group_read | fs::perms::others_read);
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  BOOST_TEST(mode_of(rt.dir() / "lock") == 0600u);
  dir.remove();
}

BOOST_AUTO_TEST_CASE(invalid_instance_name_is_a_usage_error) {
  TempRuntime rt;
  BOOST_CHECK_THROW(InstanceDir::acquire(rt.base(), "../escape"), UsageError);
  BOOST_CHECK_THROW(InstanceDir::acquire(rt.base(), ""), UsageError);
  BOOST_CHECK_THROW(InstanceDir::acquire(rt.base(), "a/b"), UsageError);
}

BOOST_AUTO_TEST_CASE(second_acquire_in_the_same_process_is_busy) {
  // flock locks belong to the open file description: a second open() of the lock file in the
  // same process conflicts just like another process would.
  TempRuntime rt;
  auto first = InstanceDir::acquire(rt.base(), rt.instance());
  first.publish(sample_info(rt.instance(), ::getpid()));
  try {
    InstanceDir::acquire(rt.base(), rt.instance());
    BOOST_ERROR("second acquire succeeded");
  } catch (const InstanceBusy& e) {
    BOOST_TEST(e.pid() == ::getpid());
    BOOST_TEST(std::string(e.what()).find(std::to_string(::getpid())) != std::string::npos);
  }
  first.remove();
}

BOOST_AUTO_TEST_CASE(acquire_from_another_process_is_busy) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const int code = in_child([&] {
    try {
      InstanceDir::acquire(rt.base(), rt.instance());
      return 1;
    } catch (const InstanceBusy& e) {
      return e.pid() == 0 ? 0 : 2;  // nothing published yet: no pid to name
    }
  });
  BOOST_TEST(code == 0);
  dir.remove();
  // Released: the child now gets it.
  BOOST_TEST(in_child([&] {
               auto d = InstanceDir::acquire(rt.base(), rt.instance());
               d.remove();
               return 0;
             }) == 0);
}

BOOST_AUTO_TEST_CASE(probing_for_a_server_never_makes_a_starting_one_busy) {
  // Clients and `chatd --status` probe the lock with a brief shared flock while a server may be
  // starting; the server must not mistake a probe for another server.
  TempRuntime rt;
  std::atomic<bool> stop{false};
  std::thread prober([&] {
    while (!stop.load()) {
      try {
        (void)find_live_instance(rt.base(), rt.instance());
      } catch (const std::exception&) {
        // the dir comes and goes under it
      }
    }
  });
  int busy = 0;
  for (int i = 0; i < 300; ++i) {
    try {
      auto dir = InstanceDir::acquire(rt.base(), rt.instance());
      dir.remove();
    } catch (const InstanceBusy&) {
      ++busy;
    }
  }
  stop = true;
  prober.join();
  BOOST_TEST(busy == 0);
}

BOOST_AUTO_TEST_CASE(live_server_in_another_process_is_busy_and_found) {
  TempRuntime rt;
  HoldingChild child(rt.base(), rt.instance());
  try {
    InstanceDir::acquire(rt.base(), rt.instance());
    BOOST_ERROR("acquire succeeded while another process holds the lock");
  } catch (const InstanceBusy& e) {
    BOOST_TEST(e.pid() == child.pid());
  }
  const auto live = find_live_instance(rt.base(), rt.instance());
  BOOST_TEST_REQUIRE(live.has_value());
  BOOST_TEST(live->pid == child.pid());
  BOOST_TEST(live->transport == "cond");
}

BOOST_AUTO_TEST_CASE(crashed_server_in_another_process_leaves_a_stale_instance) {
  TempRuntime rt;
  pid_t dead = 0;
  {
    HoldingChild child(rt.base(), rt.instance());
    dead = child.pid();
  }  // exits without remove()
  BOOST_TEST(fs::exists(rt.dir() / "instance.json"));
  BOOST_TEST(!find_live_instance(rt.base(), rt.instance()).has_value());
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const auto stale = dir.stale_info();
  BOOST_TEST_REQUIRE(stale.has_value());
  BOOST_TEST(stale->pid == dead);
  dir.remove();
}

BOOST_AUTO_TEST_CASE(base_that_is_a_symlink_is_refused) {
  TempRuntime rt;
  const fs::path real = rt.base() / "real";
  fs::create_directory(real);
  fs::permissions(real, fs::perms::owner_all);
  const fs::path link = rt.base() / "link";
  fs::create_directory_symlink(real, link);
  const auto refused = [](const fs::path& base, const std::string& instance) {
    try {
      InstanceDir::acquire(base, instance);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  const std::string what = refused(link, "inst");
  BOOST_TEST(what.find("symlink") != std::string::npos, what);
  BOOST_TEST(!fs::exists(real / "inst"));
  // The instance dir itself as a symlink.
  fs::create_directory_symlink(real, real / "inst2");
  const std::string inner = refused(real, "inst2");
  BOOST_TEST(inner.find("symlink") != std::string::npos, inner);
  BOOST_CHECK_THROW(check_private_dir(link), UsageError);
}

BOOST_AUTO_TEST_CASE(base_writable_by_others_is_refused) {
  TempRuntime rt;
  for (const auto extra : {fs::perms::group_write, fs::perms::others_write}) {
    const fs::path base = rt.base() / ("b" + std::to_string(static_cast<int>(extra)));
    fs::create_directory(base);
    fs::permissions(base, fs::perms::owner_all | extra);
    try {
      InstanceDir::acquire(base, "inst");
      BOOST_ERROR("a base writable by others was accepted");
    } catch (const UsageError& e) {
      BOOST_TEST(std::string(e.what()).find("writable") != std::string::npos, e.what());
    }
    BOOST_TEST(!fs::exists(base / "inst"));
  }
  // Also the instance level, and a file where a directory should be.
  const fs::path base = rt.base() / "ok";
  fs::create_directory(base);
  fs::permissions(base, fs::perms::owner_all);
  fs::create_directory(base / "inst");
  fs::permissions(base / "inst", fs::perms::owner_all | fs::perms::group_write);
  BOOST_CHECK_THROW(InstanceDir::acquire(base, "inst"), UsageError);
  std::ofstream(base / "file") << "";
  BOOST_CHECK_THROW(InstanceDir::acquire(base, "file"), UsageError);
}

BOOST_AUTO_TEST_CASE(publish_then_find_live_instance) {
  TempRuntime rt;
  BOOST_TEST(!find_live_instance(rt.base(), rt.instance()).has_value());  // no dir
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  BOOST_TEST(!find_live_instance(rt.base(), rt.instance()).has_value());  // not published
  const InstanceInfo info = sample_info(rt.instance(), ::getpid());
  dir.publish(info);
  const auto found = find_live_instance(rt.base(), rt.instance());
  BOOST_TEST_REQUIRE(found.has_value());
  BOOST_TEST(found->instance == info.instance);
  BOOST_TEST(found->transport == info.transport);
  BOOST_TEST(found->pid == info.pid);
  BOOST_TEST(found->protocol == info.protocol);
  BOOST_TEST(found->objects == info.objects);
  // Publishing again replaces it.
  InstanceInfo other = info;
  other.transport = "uds";
  dir.publish(other);
  BOOST_TEST(find_live_instance(rt.base(), rt.instance())->transport == "uds");
  dir.remove();
  BOOST_TEST(!find_live_instance(rt.base(), rt.instance()).has_value());
}

BOOST_AUTO_TEST_CASE(remove_leaves_no_dir) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  dir.publish(sample_info(rt.instance(), ::getpid()));
  std::ofstream(dir.path() / "extra") << "x";
  dir.remove();
  BOOST_TEST(!fs::exists(rt.dir()));
  BOOST_TEST(fs::exists(rt.base()));  // the base stays for other instances
  dir.remove();                       // idempotent
  // And the instance can be acquired again at once.
  auto again = InstanceDir::acquire(rt.base(), rt.instance());
  again.remove();
}

BOOST_AUTO_TEST_CASE(remove_contents_keeps_the_lock) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  dir.publish(sample_info(rt.instance(), ::getpid()));
  std::ofstream(dir.path() / "fifo.1") << "";
  auto removed = dir.remove_contents();
  std::sort(removed.begin(), removed.end());
  BOOST_TEST(removed.size() == 2u);
  BOOST_TEST(fs::exists(dir.path() / "lock"));
  BOOST_TEST(!fs::exists(dir.path() / "instance.json"));
  // Still ours.
  BOOST_CHECK_THROW(InstanceDir::acquire(rt.base(), rt.instance()), InstanceBusy);
  dir.remove();
}

BOOST_AUTO_TEST_CASE(dropping_without_remove_leaves_a_stale_instance) {
  // The destructor only releases the lock: files stay, as after a crash.
  TempRuntime rt;
  {
    auto dir = InstanceDir::acquire(rt.base(), rt.instance());
    dir.publish(sample_info(rt.instance(), 4242));
  }
  BOOST_TEST(fs::exists(rt.dir() / "lock"));
  BOOST_TEST(fs::exists(rt.dir() / "instance.json"));
  BOOST_TEST(!find_live_instance(rt.base(), rt.instance()).has_value());  // lock is free
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  const auto stale = dir.stale_info();
  BOOST_TEST_REQUIRE(stale.has_value());
  BOOST_TEST(stale->pid == 4242);
  const auto removed = dir.remove_contents();
  BOOST_TEST(removed.size() == 1u);
  BOOST_TEST(!dir.stale_info().has_value());
  dir.remove();
}

BOOST_AUTO_TEST_CASE(stale_info_ignores_garbage) {
  TempRuntime rt;
  auto dir = InstanceDir::acquire(rt.base(), rt.instance());
  BOOST_TEST(!dir.stale_info().has_value());
  std::ofstream(dir.path() / "instance.json") << "{ not json";
  BOOST_TEST(!dir.stale_info().has_value());
  std::ofstream(dir.path() / "instance.json") << R"({"instance": "x"})";
  BOOST_TEST(!dir.stale_info().has_value());
  dir.remove();
}

BOOST_AUTO_TEST_CASE(moved_from_dir_is_empty) {
  TempRuntime rt;
  auto a = InstanceDir::acquire(rt.base(), rt.instance());
  InstanceDir b = std::move(a);
  a.remove();  // a no-op on the moved-from object
  BOOST_TEST(fs::exists(rt.dir()));
  BOOST_CHECK_THROW(InstanceDir::acquire(rt.base(), rt.instance()), InstanceBusy);
  b.remove();
  BOOST_TEST(!fs::exists(rt.dir()));
}

BOOST_AUTO_TEST_CASE(json_round_trip_and_missing_fields) {
  const InstanceInfo info = sample_info("inst", 77);
  const InstanceInfo back = instance_info_from_json(to_json(info));
  BOOST_TEST(back.instance == "inst");
  BOOST_TEST(back.pid == 77);
  BOOST_TEST(back.objects == info.objects);
  auto j = to_json(info);
  j.erase("pid");
  BOOST_CHECK_THROW(instance_info_from_json(j), std::runtime_error);
  j = to_json(info);
  j["pid"] = "seventy";
  BOOST_CHECK_THROW(instance_info_from_json(j), std::runtime_error);
  j = to_json(info);
  j.erase("objects");
  BOOST_TEST(instance_info_from_json(j).objects.is_object());
}

BOOST_AUTO_TEST_CASE(runtime_base_resolution) {
  BOOST_TEST(resolve_runtime_base("/some/dir") == fs::path("/some/dir"));
  {
    EnvScope xdg("XDG_RUNTIME_DIR", "/run/user/1234");
    BOOST_TEST(resolve_runtime_base("") == fs::path("/run/user/1234/ipchat"));
  }
  {
    EnvScope xdg("XDG_RUNTIME_DIR", "relative/dir");  // not absolute: ignored
    BOOST_TEST(resolve_runtime_base("") == fs::path("/tmp/ipchat-" + std::to_string(::geteuid())));
  }
  {
    EnvScope xdg("XDG_RUNTIME_DIR", nullptr);
    BOOST_TEST(resolve_runtime_base("") == fs::path("/tmp/ipchat-" + std::to_string(::geteuid())));
  }
}

BOOST_AUTO_TEST_CASE(open_private_file_refuses_symlinks) {
  TempRuntime rt;
  std::ofstream(rt.base() / "target") << "x";
  fs::create_symlink(rt.base() / "target", rt.base() / "link");
  BOOST_CHECK_THROW(open_private_file(rt.base() / "link", O_RDONLY), std::system_error);
  BOOST_CHECK_NO_THROW(open_private_file(rt.base() / "target", O_RDONLY));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat

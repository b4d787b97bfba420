#include "transport/mmap/mmap.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "transport/shm/engine.hpp"

namespace chat::transport::mmap {
namespace {

static_assert(sizeof(SemWake) <= sizeof(shm::WakeArea::impl));
static_assert(alignof(SemWake) <= alignof(shm::WakeArea));

constexpr std::string_view kPrefix = "mmap.";

// Posts still counted after a wake-up are stale (the sleeper re-checks anyway); taking them
// keeps them from ending later sleeps early. Bounded so a peer posting in a loop cannot hold
// us here; past the bound we pause a little instead of spinning on its posts.
constexpr int kMaxDrain = 64;

// A file in the runtime dir, named until the client has its descriptor.
class FileSegment final : public shm::FdSegment {
 public:
  FileSegment(UniqueFd fd, std::size_t bytes, std::filesystem::path path)
      : FdSegment(std::move(fd), bytes, path.string()), path_(std::move(path)) {}
  ~FileSegment() override { granted(); }
  void granted() override {
    if (!path_.empty()) ::unlink(path_.c_str());  // ENOENT: already gone, fine
    path_.clear();
    FdSegment::granted();
  }

 private:
  std::filesystem::path path_;
};

class FileSource final : public shm::MemorySource {
 public:
  explicit FileSource(std::filesystem::path dir) : dir_(std::move(dir)) {}

  std::unique_ptr<shm::Segment> create(std::string_view what, std::size_t bytes) override {
    const std::string name = std::string(kPrefix) + std::string(what);
    const auto path = dir_ / name;
    if (what.empty() || what.find('/') != std::string_view::npos) {
      throw_system_error("open", path.string(), EINVAL);
    }
    // O_EXCL|O_NOFOLLOW: a file (or symlink) planted under the name is never used.
    UniqueFd fd(retry_eintr([&] {
      return ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    }));
    if (!fd) throw_system_error("open(O_CREAT|O_EXCL)", path.string());
    try {
      // The umask may have taken bits away from 0600 (never added any): set it exactly.
      if (::fchmod(fd.get(), 0600) != 0) throw_system_error("fchmod", path.string());
      // A new file's extent reads as zeros: the zero-filled segment the engine expects.
      if (retry_eintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(bytes)); }) != 0) {
        throw_system_error("ftruncate", path.string());
      }
    } catch (...) {
      ::unlink(path.c_str());
      throw;
    }
    return std::make_unique<FileSegment>(std::move(fd), bytes, path);
  }

  std::unique_ptr<shm::Segment> attach(const nlohmann::json&, UniqueFd fd, std::size_t bytes,
                                       uid_t owner) override {
    shm::check_private_file(fd.get(), bytes, owner, "the granted file");
    auto segment = std::make_unique<shm::FdSegment>(std::move(fd), bytes, "the granted file");
    segment->close_fd();
    return segment;
  }

  bool passes_fd() const override { return true; }

  nlohmann::json objects() const override { return {{"mmap_file_prefix", kPrefix}}; }

 private:
  std::filesystem::path dir_;
};

class SemWaker final : public shm::Waker {
 public:
  void init(shm::WakeArea& area) override {
    area.sleeping.store(0);
    if (::sem_init(&sem_wake(area).sem, 1, 0) != 0) throw_system_error("sem_init", "wake area");
  }

  void attach_sleeper(shm::WakeArea&) override {}

  void sleep(shm::WakeArea& area, Deadline deadline) override {
    sem_t* sem = &sem_wake(area).sem;
    const timespec until = to_monotonic_timespec(deadline);
    if (retry_eintr([&] { return ::sem_clockwait(sem, CLOCK_MONOTONIC, &until); }) != 0) {
      return;  // ETIMEDOUT, or EINVAL from a semaphore someone scribbled over
    }
    int drained = 0;
    while (drained < kMaxDrain && ::sem_trywait(sem) == 0) ++drained;
    if (drained == kMaxDrain) {
      const timespec pause{0, 1'000'000};
      ::nanosleep(&pause, nullptr);
    }
  }

  shm::WakeResult wake(shm::WakeArea& area, pid_t) override {
    // A post never waits for anything the sleeper holds. EOVERFLOW only if someone posted it
    // to the limit: the sleeper is awake then anyway.
    ::sem_post(&sem_wake(area).sem);
    return shm::WakeResult::kDone;
  }
};

}  // namespace

shm::Flavor flavor(const std::filesystem::path& dir) {
  return shm::Flavor{make_file_source(dir), std::make_unique<SemWaker>()};
}

std::unique_ptr<shm::MemorySource> make_file_source(const std::filesystem::path& dir) {
  return std::make_unique<FileSource>(dir);
}

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return shm::listen(options, "mmap", flavor(options.dir));
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  return shm::connect(options, flavor(options.dir));
}

std::vector<std::string> cleanup(const CleanupOptions&) {
  return {};
}

}  // namespace chat::transport::mmap

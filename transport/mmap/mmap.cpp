#include "transport/mmap/mmap.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <ctime>

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "transport/shm/engine.hpp"
#include "transport/shm/mapped_segment.hpp"

namespace chat::transport::mmap {
namespace bip = boost::interprocess;
namespace {

static_assert(sizeof(SemWake) <= sizeof(shm::WakeArea::impl));
static_assert(alignof(SemWake) <= alignof(shm::WakeArea));

constexpr std::string_view kPrefix = "mmap.";

// Posts still counted after a wake-up are stale (the sleeper re-checks anyway); taking them
// keeps them from ending later sleeps early. Bounded so a peer posting in a loop cannot hold
// us here; past the bound we pause a little instead of spinning on its posts.
constexpr int kMaxDrain = 64;

// Names come from shared memory a client can scribble on: only "mmap.<no slash>" is ours.
bool valid_name(std::string_view name) {
  return name.size() > kPrefix.size() && name.size() < 96 &&
         name.substr(0, kPrefix.size()) == kPrefix && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

class FileSource final : public shm::MemorySource {
 public:
  explicit FileSource(std::filesystem::path dir) : dir_(std::move(dir)) {}

  std::unique_ptr<shm::Segment> create(std::string_view what, std::size_t bytes) override {
    const std::string name = std::string(kPrefix) + std::string(what);
    const auto path = dir_ / name;
    if (!valid_name(name)) throw_system_error("open", path.string(), EINVAL);
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
      return map(fd.get(), path, name, bytes);
    } catch (...) {
      ::unlink(path.c_str());
      throw;
    }
  }

  std::unique_ptr<shm::Segment> open(const std::string& name, std::size_t bytes) override {
    const auto path = dir_ / name;
    if (!valid_name(name)) throw_system_error("open", path.string(), EINVAL);
    UniqueFd fd(retry_eintr([&] { return ::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC); }));
    if (!fd) throw_system_error("open(O_NOFOLLOW)", path.string());
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_system_error("fstat", path.string());
    if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
      throw_system_error("open", path.string() + " is not a private regular file of ours", EACCES);
    }
    if (static_cast<std::size_t>(st.st_size) != bytes) {
      throw_system_error("open",
                         path.string() + " has " + std::to_string(st.st_size) +
                             " bytes, expected " + std::to_string(bytes),
                         EINVAL);
    }
    return map(fd.get(), path, name, bytes);
  }

  void remove(const std::string& name) override {
    if (valid_name(name)) ::unlink((dir_ / name).c_str());  // ENOENT: already gone, fine
  }

  nlohmann::json objects() const override { return {{"mmap_file_prefix", kPrefix}}; }

 private:
  // Maps the file `fd` has open (and checked) through Boost.Interprocess, which opens it again
  // by name: the two must be the same file, or someone swapped it in between.
  static std::unique_ptr<shm::Segment> map(int fd, const std::filesystem::path& path,
                                           const std::string& name, std::size_t bytes) {
    struct stat want {};
    struct stat got {};
    if (::fstat(fd, &want) != 0) throw_system_error("fstat", path.string());
    try {
      bip::file_mapping file(path.c_str(), bip::read_write);
      if (::fstat(file.get_mapping_handle().handle, &got) != 0) {
        throw_system_error("fstat", path.string());
      }
      if (got.st_dev != want.st_dev || got.st_ino != want.st_ino) {
        throw_system_error("open", path.string() + " was replaced while being opened", EACCES);
      }
      return std::make_unique<shm::MappedSegment>(
          name, bip::mapped_region(file, bip::read_write, 0, bytes));
    } catch (const bip::interprocess_exception& e) {
      const int err = e.get_native_error();
      throw_system_error("mmap", path.string(), err != 0 ? err : EIO);
    }
  }

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

  void wake(shm::WakeArea& area, pid_t) override {
    // EOVERFLOW only if someone posted it to the limit: the sleeper is awake then anyway.
    ::sem_post(&sem_wake(area).sem);
  }
};

}  // namespace

shm::Flavor flavor(const std::filesystem::path& dir) {
  // The server may use the same waker: a semaphore wait holds nothing a client could keep, and
  // it ends at the deadline whatever a client wrote into the semaphore.
  return shm::Flavor{make_file_source(dir), std::make_unique<SemWaker>(), nullptr};
}

std::unique_ptr<shm::MemorySource> make_file_source(const std::filesystem::path& dir) {
  return std::make_unique<FileSource>(dir);
}

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options) {
  return shm::listen(options, flavor(options.dir));
}

std::unique_ptr<ClientConnection> connect(ConnectOptions options) {
  return shm::connect(options, flavor(options.dir));
}

std::vector<std::string> cleanup(const CleanupOptions&) {
  return {};
}

}  // namespace chat::transport::mmap

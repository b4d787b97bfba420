#include "transport/shm/posix_shm.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "common/error.hpp"
#include "transport/names.hpp"
#include "transport/shm/mapped_segment.hpp"

namespace chat::transport::shm {
namespace bip = boost::interprocess;
namespace {

[[noreturn]] void rethrow(const bip::interprocess_exception& e, const char* call,
                          const std::string& name) {
  const int err = e.get_native_error();
  throw_system_error(call, "/dev/shm/" + name, err != 0 ? err : EIO);
}

class PosixShmSource final : public MemorySource {
 public:
  explicit PosixShmSource(std::string prefix) : prefix_(std::move(prefix)) {}

  std::unique_ptr<Segment> create(std::string_view what, std::size_t bytes) override {
    const std::string name = prefix_ + std::string(what);
    try {
      bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write,
                                    bip::permissions(0600));
      shm.truncate(static_cast<bip::offset_t>(bytes));
      return std::make_unique<MappedSegment>(name, bip::mapped_region(shm, bip::read_write));
    } catch (const bip::interprocess_exception& e) {
      rethrow(e, "shm_open(O_CREAT|O_EXCL)", name);
    }
  }

  std::unique_ptr<Segment> open(const std::string& name, std::size_t bytes) override {
    try {
      bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
      struct stat st {};
      if (::fstat(shm.get_mapping_handle().handle, &st) != 0) {
        throw_system_error("fstat", "/dev/shm/" + name);
      }
      if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0 ||
          static_cast<std::size_t>(st.st_size) != bytes) {
        throw std::runtime_error("/dev/shm/" + name +
                                 " is not a private segment of the expected size");
      }
      return std::make_unique<MappedSegment>(name, bip::mapped_region(shm, bip::read_write));
    } catch (const bip::interprocess_exception& e) {
      rethrow(e, "shm_open", name);
    }
  }

  void remove(const std::string& name) override { bip::shared_memory_object::remove(name.c_str()); }

  nlohmann::json objects() const override { return {{"posix_shm_prefix", prefix_}}; }

 private:
  std::string prefix_;
};

std::string prefix_for(const std::filesystem::path& dir) {
  return "ipchat." + instance_tag(dir) + ".";
}

}  // namespace

std::unique_ptr<MemorySource> make_posix_shm_source(const std::filesystem::path& dir) {
  return std::make_unique<PosixShmSource>(prefix_for(dir));
}

std::vector<std::string> remove_posix_shm_leftovers(const std::filesystem::path& dir) {
  const std::string prefix = prefix_for(dir);
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    struct stat st {};
    if (::lstat(entry.path().c_str(), &st) != 0 || st.st_uid != ::geteuid()) continue;
    if (bip::shared_memory_object::remove(name.c_str())) removed.push_back("/dev/shm/" + name);
  }
  return removed;
}

}  // namespace chat::transport::shm

// Where a shared-memory backend's memory comes from: a sealed memfd, a SysV segment, or a file
// in the runtime dir. The server creates one segment per client and hands it over at the door;
// the client maps exactly what it was handed, never anything by a name it looked up.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>

#include "common/unique_fd.hpp"

namespace chat::transport::shm {

// One mapping of one segment; unmapped on destruction.
class Segment {
 public:
  virtual ~Segment() = default;
  virtual std::byte* data() = 0;
  virtual std::size_t size() const = 0;
  // Server: the descriptor the grant passes to the client, or -1 if the channel json says
  // everything (a SysV id).
  virtual int fd() const = 0;
  // Server: what the client needs besides the descriptor, for the channel json.
  virtual nlohmann::json channel() const = 0;
  // Server: the client has it now; drops any name the segment still has. Idempotent.
  virtual void granted() = 0;
};

// Creates and maps segments for one instance. Thread-safe.
class MemorySource {
 public:
  virtual ~MemorySource() = default;
  // Server: a new zero-filled segment of `bytes` that only this account can open, and nobody
  // by name once granted(). `what` tells the segments of one instance apart ("c3.17").
  // Throws std::system_error.
  virtual std::unique_ptr<Segment> create(std::string_view what, std::size_t bytes) = 0;
  // Client: maps the segment the server granted: `fd` (empty for sources that pass none) and
  // `channel`. Checks it is the server's (`owner`), private and exactly `bytes`; throws
  // std::system_error or std::runtime_error saying what is wrong.
  virtual std::unique_ptr<Segment> attach(const nlohmann::json& channel, UniqueFd fd,
                                          std::size_t bytes, uid_t owner) = 0;
  // True if a grant passes a descriptor for the segment.
  virtual bool passes_fd() const = 0;
  // What a crashed server could leave behind, for instance.json and cleanup.
  virtual nlohmann::json objects() const = 0;
};

// A MAP_SHARED read-write mapping of `fd`, which the segment keeps open until granted() or
// close_fd() (the server passes it on first). Throws std::system_error.
class FdSegment : public Segment {
 public:
  FdSegment(UniqueFd fd, std::size_t bytes, std::string_view label);
  ~FdSegment() override;
  FdSegment(const FdSegment&) = delete;
  FdSegment& operator=(const FdSegment&) = delete;
  std::byte* data() override { return data_; }
  std::size_t size() const override { return size_; }
  int fd() const override { return fd_.get(); }
  nlohmann::json channel() const override { return nlohmann::json::object(); }
  // Once granted the server needs the mapping only, not a descriptor per client.
  void granted() override { close_fd(); }
  // The mapping stays valid without it.
  void close_fd() { fd_.reset(); }

 private:
  UniqueFd fd_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// Checks that `fd` is a regular file (or memfd) of `owner`, with no permission for group or
// others and exactly `bytes` long; throws std::runtime_error naming `label` otherwise.
void check_private_file(int fd, std::size_t bytes, uid_t owner, std::string_view label);

}  // namespace chat::transport::shm

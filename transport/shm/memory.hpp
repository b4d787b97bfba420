// Where a shared-memory backend's memory comes from: POSIX shm, a SysV segment, or a file.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace chat::transport::shm {

// One mapping of one segment; unmapped on destruction.
class Segment {
 public:
  virtual ~Segment() = default;
  virtual std::byte* data() = 0;
  virtual std::size_t size() const = 0;
  // What a peer passes to MemorySource::open to map the same memory.
  virtual const std::string& name() const = 0;
};

// Creates, opens and removes segments for one instance. Thread-safe.
class MemorySource {
 public:
  virtual ~MemorySource() = default;
  // Creates a new zero-filled segment of `bytes`, mode 0600, failing (std::system_error) if
  // one of that name exists. `what` tells segments of one instance apart ("ctl", "c3.17").
  virtual std::unique_ptr<Segment> create(std::string_view what, std::size_t bytes) = 0;
  // Maps an existing segment created by the server; checks it is ours and exactly `bytes`.
  virtual std::unique_ptr<Segment> open(const std::string& name, std::size_t bytes) = 0;
  // Removes the segment's name; mappings stay valid until unmapped. Idempotent.
  virtual void remove(const std::string& name) = 0;
  // Describes the naming scheme for instance.json / cleanup.
  virtual nlohmann::json objects() const = 0;
};

}  // namespace chat::transport::shm

// The Segment of the backends whose memory Boost.Interprocess maps: a POSIX shm object
// (posix_shm.cpp) or a regular file (mmap/mmap.cpp).
#pragma once

#include <boost/interprocess/mapped_region.hpp>
#include <string>
#include <utility>

#include "transport/shm/memory.hpp"

namespace chat::transport::shm {

// One mapping under the name a peer opens it by; the region unmaps it on destruction.
class MappedSegment final : public Segment {
 public:
  MappedSegment(std::string name, boost::interprocess::mapped_region region)
      : name_(std::move(name)), region_(std::move(region)) {}
  std::byte* data() override { return static_cast<std::byte*>(region_.get_address()); }
  std::size_t size() const override { return region_.get_size(); }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  boost::interprocess::mapped_region region_;
};

}  // namespace chat::transport::shm

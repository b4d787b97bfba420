#include "transport/names.hpp"

#include <unistd.h>

#include <cstdint>
#include <cstdio>

namespace chat::transport {

std::string instance_tag(const std::filesystem::path& dir) {
  std::error_code ec;
  const std::string path = std::filesystem::absolute(dir, ec).lexically_normal().string();
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (unsigned char c : path) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%u.%016llx", static_cast<unsigned>(::geteuid()),
                static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace chat::transport

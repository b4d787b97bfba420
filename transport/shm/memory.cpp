#include "transport/shm/memory.hpp"

#include <sys/mman.h>
#include <sys/stat.h>

#include <stdexcept>
#include <string>

#include "common/error.hpp"

namespace chat::transport::shm {

FdSegment::FdSegment(UniqueFd fd, std::size_t bytes, std::string_view label)
    : fd_(std::move(fd)), size_(bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) throw_system_error("mmap", std::string(label));
  data_ = static_cast<std::byte*>(p);
}

FdSegment::~FdSegment() {
  ::munmap(data_, size_);
}

void check_private_file(int fd, std::size_t bytes, uid_t owner, std::string_view label) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_system_error("fstat", std::string(label));
  if (!S_ISREG(st.st_mode)) throw std::runtime_error(std::string(label) + " is not a regular file");
  if (st.st_uid != owner) {
    throw std::runtime_error(std::string(label) + " belongs to uid " + std::to_string(st.st_uid) +
                             ", not to the server's uid " + std::to_string(owner));
  }
  if ((st.st_mode & 077) != 0) {
    throw std::runtime_error(std::string(label) + " is accessible to other accounts");
  }
  if (static_cast<std::size_t>(st.st_size) != bytes) {
    throw std::runtime_error(std::string(label) + " has " + std::to_string(st.st_size) +
                             " bytes, expected " + std::to_string(bytes));
  }
}

}  // namespace chat::transport::shm

#include "transport/bell.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <utility>

#include "common/error.hpp"

namespace chat::transport {
namespace {

constexpr std::size_t kPageBytes = 4096;

}  // namespace

ServerBell::ServerBell() : page_(::memfd_create("ipchat-bell", MFD_CLOEXEC | MFD_ALLOW_SEALING)) {
  if (!page_) throw_system_error("memfd_create", "server bell");
  if (::ftruncate(page_.get(), kPageBytes) != 0) throw_system_error("ftruncate", "server bell");
  void* p = ::mmap(nullptr, kPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, page_.get(), 0);
  if (p == MAP_FAILED) throw_system_error("mmap", "server bell");
  flag_ = new (p) std::atomic<std::uint32_t>(0);
  // From here on nobody can write the page except through the mapping above: no new writable
  // mapping (and no mprotect of a read-only one), no write(2), no resizing, no unsealing.
  if (::fcntl(page_.get(), F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) {
    const int err = errno;
    ::munmap(p, kPageBytes);
    throw_system_error("fcntl F_ADD_SEALS", "server bell", err);
  }
}

ServerBell::~ServerBell() {
  ::munmap(flag_, kPageBytes);
}

void ServerBell::sleeping() {
  flag_->store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void ServerBell::awake() {
  flag_->store(0, std::memory_order_relaxed);
}

ClientBell::ClientBell(UniqueFd page, UniqueFd event) : event_(std::move(event)) {
  void* p = ::mmap(nullptr, kPageBytes, PROT_READ, MAP_SHARED, page.get(), 0);
  if (p == MAP_FAILED) throw_system_error("mmap", "server bell");
  flag_ = static_cast<const std::atomic<std::uint32_t>*>(p);
}

ClientBell::ClientBell(ClientBell&& other) noexcept
    : event_(std::move(other.event_)), flag_(std::exchange(other.flag_, nullptr)) {}

ClientBell::~ClientBell() {
  if (flag_ != nullptr) ::munmap(const_cast<std::atomic<std::uint32_t>*>(flag_), kPageBytes);
}

void ClientBell::ring() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (flag_->load(std::memory_order_relaxed) != 0) ring_always();
}

void ClientBell::ring_always() {
  const std::uint64_t one = 1;
  // EAGAIN (the counter is full) means it is rung already; nothing else is actionable.
  [[maybe_unused]] const ssize_t n = ::write(event_.get(), &one, sizeof one);
}

UniqueFd make_bell_eventfd() {
  UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!fd) throw_system_error("eventfd", "client bell");
  return fd;
}

}  // namespace chat::transport

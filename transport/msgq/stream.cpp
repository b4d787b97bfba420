#include "transport/msgq/stream.hpp"

#include <sys/msg.h>

#include <cstring>
#include <memory>

#include "common/error.hpp"
#include "common/limits.hpp"

namespace chat::transport::msgq::stream {

int put(int queue, long mtype, std::span<const std::byte> bytes) {
  // msgsnd wants the type and the bytes in one buffer; one on the stack is 8 KiB.
  wire::Buffer b;
  if (bytes.size() > sizeof b.text) return EINVAL;
  b.mtype = mtype;
  if (!bytes.empty()) std::memcpy(b.text, bytes.data(), bytes.size());
  const int r = retry_eintr([&] { return ::msgsnd(queue, &b, bytes.size(), IPC_NOWAIT); });
  return r == 0 ? 0 : errno;
}

ssize_t take(int queue, wire::Buffer& b, bool block) {
  return retry_eintr([&] {
    return ::msgrcv(queue, &b, sizeof b.text, 0, MSG_NOERROR | (block ? 0 : IPC_NOWAIT));
  });
}

Up parse_up(const wire::Buffer& b, std::size_t size) {
  Up up;
  if (b.mtype == wire::kData) {
    if (size >= 1 && size <= kMaxFrameBytes) {
      up.kind = Up::Kind::kFrame;
      up.frame = {b.text, size};
    } else if (size == 0) {
      up.error = "a data message of 0 bytes";
    } else {
      up.error = "a data message longer than " + std::to_string(kMaxFrameBytes) + " bytes";
    }
  } else if (b.mtype == wire::kBye) {
    if (size == 0) {
      up.kind = Up::Kind::kBye;
    } else {
      up.error = "a goodbye of " + std::to_string(size) + " bytes";
    }
  } else {
    up.error = "a message of unknown type " + std::to_string(b.mtype) + " (" +
               std::to_string(size) + " bytes)";
  }
  return up;
}

std::span<const std::byte> down_frame(const wire::Buffer& b, std::size_t size) {
  if (b.mtype != wire::kData || size < 1 || size > kMaxFrameBytes) return {};
  return {b.text, size};
}

}  // namespace chat::transport::msgq::stream

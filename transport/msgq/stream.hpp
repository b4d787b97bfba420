// The frame stream of the `msgq` backend: frames packed into messages, messages put into and
// taken off a queue, and what a message taken off a queue says (wire.hpp). Nothing here
// blocks unless asked to, and nothing trusts what it reads.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <string>

#include "transport/msgq/wire.hpp"

namespace chat::transport::msgq::stream {

// msgsnd without waiting: 0, or the errno (EAGAIN: the queue is full; EIDRM, EINVAL: it is
// gone; EACCES: its owner took our access away).
int put(int queue, long mtype, std::span<const std::byte> bytes);

template <typename T>
int put_value(int queue, long mtype, const T& value) {
  return put(queue, mtype, std::as_bytes(std::span(&value, 1)));
}

// msgrcv of the next message, whatever its type, into `b`: its size, or -1 with errno set
// (ENOMSG: nothing there and !block). MSG_NOERROR: a message too long is cut to
// sizeof b.text and taken, rather than left to block the queue.
ssize_t take(int queue, wire::Buffer& b, bool block);

// What one message of an up queue says.
struct Up {
  enum class Kind { kFrame, kBye, kBad };
  Kind kind = Kind::kBad;
  std::span<const std::byte> frame;  // kFrame
  std::string error;                 // kBad: what is wrong with it
};
Up parse_up(const wire::Buffer& b, std::size_t size);

// The frame in a message of a down queue; empty if it is no frame (a wake-up, or garbage).
std::span<const std::byte> down_frame(const wire::Buffer& b, std::size_t size);

}  // namespace chat::transport::msgq::stream

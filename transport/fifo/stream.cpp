#include "transport/fifo/stream.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.hpp"

namespace chat::transport::fifo {

WireFrame::WireFrame(wire::Kind kind, std::span<const std::byte> payload) {
  const auto header = wire::encode_header(kind, payload.size());
  std::memcpy(bytes.data(), header.data(), header.size());
  if (!payload.empty()) std::memcpy(bytes.data() + header.size(), payload.data(), payload.size());
  size = header.size() + payload.size();
}

void FrameReader::append(const std::byte* p, std::size_t n) {
  if (begin_ == buf_.size()) {
    buf_.clear();
    begin_ = 0;
  } else if (begin_ >= kCompactAt) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(begin_));
    begin_ = 0;
  }
  buf_.insert(buf_.end(), p, p + n);
}

FrameReader::Result FrameReader::next(wire::Header& header, Frame& payload, std::string& error) {
  const std::size_t available = buf_.size() - begin_;
  if (available < wire::kHeaderBytes) return Result::kNeedMore;
  const auto h = wire::decode_header(buf_.data() + begin_, error);
  if (!h) return Result::kMalformed;
  if (available < wire::kHeaderBytes + h->length) return Result::kNeedMore;
  header = *h;
  const std::byte* start = buf_.data() + begin_ + wire::kHeaderBytes;
  payload.assign(start, start + h->length);
  begin_ += wire::kHeaderBytes + h->length;
  return Result::kFrame;
}

Fill fill(int fd, FrameReader& reader, std::span<std::byte> buffer, std::size_t limit) {
  Fill f;
  while (f.bytes < limit) {
    const std::size_t want = std::min(buffer.size(), limit - f.bytes);
    const ssize_t n = retry_eintr([&] { return ::read(fd, buffer.data(), want); });
    if (n > 0) {
      reader.append(buffer.data(), static_cast<std::size_t>(n));
      f.bytes += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0 || errno != EAGAIN) f.end = true;
    break;
  }
  return f;
}

Flow write_now(int fd, std::span<const std::byte> bytes, std::size_t& written) {
  written = 0;
  while (written < bytes.size()) {
    const ssize_t n =
        retry_eintr([&] { return ::write(fd, bytes.data() + written, bytes.size() - written); });
    if (n > 0) {
      written += static_cast<std::size_t>(n);
      continue;
    }
    return n < 0 && errno == EAGAIN ? Flow::kBlocked : Flow::kBroken;
  }
  return Flow::kDone;
}

Flow write_pending(int fd, std::vector<std::byte>& pending) {
  std::size_t written = 0;
  const Flow flow = write_now(fd, pending, written);
  pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(written));
  return flow;
}

}  // namespace chat::transport::fifo

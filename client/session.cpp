#include "client/session.hpp"

#include "common/error.hpp"
#include "common/instance.hpp"
#include "transport/factory.hpp"

namespace chat::client {
namespace proto = protocol;

std::unique_ptr<ChatSession> ChatSession::open(const SessionOptions& o) {
  const auto base = resolve_runtime_base(o.runtime_dir);
  std::optional<InstanceInfo> info;
  try {
    info = find_live_instance(base, o.instance);
  } catch (const std::exception& e) {
    throw SessionError(kExitFailure, e.what());
  }
  if (!info) {
    throw SessionError(kExitNoServer,
                       "no chatd is running for instance '" + o.instance + "' (looked in " +
                           (base / o.instance).string() +
                           "); start one with: chatd --instance=" + o.instance +
                           (o.runtime_dir.empty() ? "" : " --runtime-dir=" + o.runtime_dir));
  }
  if (!o.transport.empty() && o.transport != info->transport) {
    throw SessionError(kExitUsage, "--transport=" + o.transport +
                                       " does not match the server's transport '" +
                                       info->transport + "'");
  }
  if (info->protocol != proto::kVersion) {
    throw SessionError(kExitFailure, "the server speaks protocol " +
                                         std::to_string(info->protocol) + ", this client " +
                                         std::to_string(proto::kVersion));
  }
  const transport::Backend* backend = transport::find_backend(info->transport);
  if (backend == nullptr) {
    throw SessionError(kExitFailure, "the server uses transport '" + info->transport +
                                         "', which this client does not know");
  }
  std::unique_ptr<ChatSession> s(new ChatSession());
  s->transport_ = info->transport;
  s->instance_ = o.instance;
  const Deadline deadline = deadline_after(o.timeout);
  transport::ConnectOptions co;
  co.dir = base / o.instance;
  co.instance = o.instance;
  co.server_pid = info->pid;
  co.objects = info->objects;
  co.deadline = deadline;
  try {
    s->connection_ = backend->connect(co);
  } catch (const transport::ConnectError& e) {
    switch (e.kind()) {
      case transport::ConnectError::Kind::kNoServer:
        throw SessionError(kExitNoServer, std::string("cannot reach chatd: ") + e.what() +
                                              "; start one with: chatd --instance=" + o.instance);
      case transport::ConnectError::Kind::kRefused:
        throw SessionError(kExitFailure, std::string("server_full: ") + e.what());
      default:
        throw SessionError(kExitFailure, std::string("cannot connect: ") + e.what());
    }
  } catch (const std::exception& e) {
    throw SessionError(kExitFailure, std::string("cannot connect: ") + e.what());
  }
  if (!s->send(proto::Hello{o.nick, o.room})) {
    throw SessionError(kExitConnectionLost, "the server closed the connection during the hello");
  }
  proto::Message m;
  for (;;) {
    const Result r = s->receive(m, deadline);
    if (r == Result::kTimeout)
      throw SessionError(kExitFailure, "the server did not answer the hello");
    if (r == Result::kClosed) {
      throw SessionError(kExitConnectionLost, "the server closed the connection during the hello");
    }
    if (auto* w = std::get_if<proto::Welcome>(&m)) {
      s->welcome_ = *w;
      return s;
    }
    if (auto* e = std::get_if<proto::Error>(&m)) {
      const int code = e->code == "nick_in_use" || e->code == "bad_nick" ? kExitNickRejected
                       : e->code == "bad_room"                           ? kExitUsage
                                                                         : kExitFailure;
      throw SessionError(code, e->code + ": " + e->text);
    }
  }
}

bool ChatSession::send(const proto::Message& m) {
  const proto::Frame frame = proto::encode(m);
  return connection_->send(frame, kNoDeadline) == transport::SendResult::kSent;
}

ChatSession::Result ChatSession::receive(proto::Message& out, Deadline deadline) {
  switch (connection_->receive(buffer_, deadline)) {
    case transport::ReceiveResult::kTimeout:
      return Result::kTimeout;
    case transport::ReceiveResult::kClosed:
      return Result::kClosed;
    case transport::ReceiveResult::kFrame:
      break;
  }
  proto::DecodeResult d = proto::decode(buffer_);
  if (!d.message || proto::is_client_message(*d.message)) return Result::kClosed;
  out = std::move(*d.message);
  return Result::kMessage;
}

}  // namespace chat::client

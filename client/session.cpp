#include "client/session.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include "common/error.hpp"
#include "common/instance.hpp"
#include "transport/factory.hpp"

namespace chat::client {
namespace proto = protocol;

namespace {

void require_own_base(const std::filesystem::path& base) {
  struct stat st {};
  if (::lstat(base.c_str(), &st) != 0) return;  // no base: the door says no server runs
  if (S_ISLNK(st.st_mode) || st.st_uid != ::geteuid()) {
    throw transport::ConnectError(
        transport::ConnectError::Kind::kOther,
        base.string() + " is not this account's own runtime dir (owner uid " +
            std::to_string(st.st_uid) + (S_ISLNK(st.st_mode) ? ", a symlink" : "") +
            "); refusing it. To join another account's server, name its dir with --runtime-dir");
  }
}

}  // namespace

std::unique_ptr<ChatSession> ChatSession::open(const SessionOptions& o) {
  const auto base = resolve_runtime_base(o.runtime_dir);
  const auto dir = base / o.instance;
  const std::string start_hint = "; start one with: chatd --instance=" + o.instance +
                                 (o.runtime_dir.empty() ? "" : " --runtime-dir=" + o.runtime_dir);
  const Deadline deadline = deadline_after(o.timeout);
  std::unique_ptr<ChatSession> s(new ChatSession());
  s->instance_ = o.instance;
  try {
    // The default base is this account's own: a server there must be ours, or someone who
    // planted /tmp/ipchat-UID would be listening to us. A base given explicitly may be
    // another account's (a shared server's), and the door checks that its owner serves it.
    if (o.runtime_dir.empty()) require_own_base(base);
    transport::ConnectOptions co = transport::arrive(dir, o.instance, deadline);
    if (!o.transport.empty() && o.transport != co.pass.transport) {
      throw SessionError(kExitUsage, "--transport=" + o.transport +
                                         " does not match the server's transport '" +
                                         co.pass.transport + "'");
    }
    s->transport_ = co.pass.transport;
    s->connection_ = transport::connect(std::move(co));
  } catch (const transport::ConnectError& e) {
    switch (e.kind()) {
      case transport::ConnectError::Kind::kNoServer:
        throw SessionError(kExitNoServer, "no chatd is running for instance '" + o.instance +
                                              "' (looked in " + dir.string() + ": " + e.what() +
                                              ")" + start_hint);
      case transport::ConnectError::Kind::kPermission:
        throw SessionError(kExitPermission, e.what());
      case transport::ConnectError::Kind::kRefused: {
        const std::string why = e.what();
        throw SessionError(kExitFailure,
                           why.rfind("server_", 0) == 0 ? why : "server_full: " + why);
      }
      default:
        throw SessionError(kExitFailure, std::string("cannot connect: ") + e.what());
    }
  } catch (const SessionError&) {
    throw;
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

// ChatSession: one client's connection to chatd, speaking the protocol over a Transport.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/protocol.hpp"
#include "common/time.hpp"
#include "transport/transport.hpp"

namespace chat::client {

// Exit codes of chat (DESIGN.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNoServer = 3;
inline constexpr int kExitNickRejected = 4;
inline constexpr int kExitConnectionLost = 5;
inline constexpr int kExitPermission = 6;

// A failure that ends the client with `exit_code`; what() is the message for stderr.
class SessionError : public std::runtime_error {
 public:
  SessionError(int exit_code, const std::string& what)
      : std::runtime_error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

struct SessionOptions {
  std::string nick;
  std::string room = "lobby";
  std::string instance = "default";
  std::string runtime_dir;  // empty: the default base
  std::string transport;    // empty: whatever the server uses; otherwise it must match
  Clock::duration timeout = std::chrono::seconds(5);  // for connecting and the hello
};

// Threading: one thread may send() while another receive()s.
class ChatSession {
 public:
  // Finds the instance's server, connects and says hello. Throws SessionError: kExitNoServer if
  // no server runs, kExitNickRejected for nick_in_use/bad_nick, kExitUsage for a transport
  // mismatch, kExitPermission if the server does not admit this account, kExitFailure
  // otherwise (server_full among them).
  static std::unique_ptr<ChatSession> open(const SessionOptions& options);

  const protocol::Welcome& welcome() const { return welcome_; }
  const std::string& transport() const { return transport_; }
  const std::string& instance() const { return instance_; }

  // Sends one message, waiting while the link is full. False if the connection is gone.
  bool send(const protocol::Message& m);

  enum class Result { kMessage, kTimeout, kClosed };
  // Receives the next server message. kClosed: the connection ended; see server_alive().
  // A malformed frame from the server ends the connection too (kClosed).
  Result receive(protocol::Message& out, Deadline deadline);

  bool server_alive() { return connection_->server_alive(); }
  void wake() { connection_->wake(); }

 private:
  ChatSession() = default;
  std::unique_ptr<transport::ClientConnection> connection_;
  protocol::Welcome welcome_;
  std::string transport_;
  std::string instance_;
  transport::Frame buffer_;
};

}  // namespace chat::client

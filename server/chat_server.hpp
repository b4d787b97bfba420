// ChatServer: sessions, nicks, rooms, history and commands. Plain code with no IPC: it reads
// decoded client frames and writes encoded frames through a Link, so tests can drive it
// directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/log.hpp"
#include "common/protocol.hpp"
#include "transport/transport.hpp"

namespace chat::server {

using transport::ClientId;
using transport::SendResult;

// Where ChatServer's frames go: in chatd, a transport::ServerEndpoint.
class Link {
 public:
  virtual ~Link() = default;
  // Non-blocking; kFull means "call ChatServer::writable(id) when there is room again".
  virtual SendResult send(ClientId id, std::span<const std::byte> frame) = 0;
  // Sends frames to one client in order, waking it at most once (ServerEndpoint::send_batch):
  // how many were sent; `stopped` as there. The default calls send() for each.
  virtual std::size_t send_batch(ClientId id, std::span<const std::span<const std::byte>> frames,
                                 SendResult& stopped) {
    std::size_t sent = 0;
    stopped = SendResult::kSent;
    for (const auto& frame : frames) {
      stopped = send(id, frame);
      if (stopped != SendResult::kSent) break;
      ++sent;
    }
    return sent;
  }
  // Ends the connection; no frame is sent to `id` afterwards.
  virtual void close(ClientId id) = 0;
  // Bytes sent to `id` that the client has not taken yet (ServerEndpoint::buffered).
  virtual std::size_t buffered(ClientId id) = 0;
};

struct ChatOptions {
  std::size_t max_clients = 256;
  std::size_t history = 100;
  std::size_t client_queue_bytes = 1 << 20;  // evict a client whose backlog grows past this
  // With members of several accounts (--access other than user): a nick that is the login
  // name of another human account is refused (nick_reserved), so nobody can pose as another.
  bool reserve_account_nicks = false;
};

struct RoomStats {
  std::string name;
  std::size_t members = 0;
  std::uint64_t seq = 0;    // of the room's last event
  std::size_t history = 0;  // messages kept for members who join
};

struct ClientStats {
  ClientId id = 0;
  pid_t pid = 0;
  std::string user;  // its Unix account, from the kernel
  std::string nick;  // empty until its hello is accepted
  std::vector<std::string> rooms;
  std::size_t queued_frames = 0;    // the backlog the server keeps for it...
  std::size_t queued_bytes = 0;     // ...which evicts it past client_queue_bytes
  bool blocked = false;             // its transport buffers are full
  std::size_t transport_bytes = 0;  // sent and still in the transport, not yet read
};

struct ChatStats {
  std::size_t clients = 0;  // with an accepted hello
  std::size_t rooms = 0;
  std::uint64_t messages = 0;
  std::uint64_t evictions = 0;
  std::size_t queued_bytes = 0;          // sum of all client backlogs
  std::size_t transport_bytes = 0;       // sum over clients
  std::vector<RoomStats> room_list;      // by folded name
  std::vector<ClientStats> client_list;  // every connection, by id
};

// Thread-safe. Calls for one client must not overlap and must come in the order the
// transport reported them (chatd's Dispatcher keys its workers by client id for that).
class ChatServer {
  struct Session;

 public:
  ChatServer(Link& link, const Logger& logger, ChatOptions options);
  ~ChatServer();

  // A new client: process `pid` of account `uid`, as the kernel reported them.
  void connected(ClientId id, pid_t pid, uid_t uid);
  void received(ClientId id, std::span<const std::byte> frame);
  // One frame from one client, for received(std::span<const Received>).
  struct Received {
    ClientId id;
    std::span<const std::byte> frame;
  };
  // Frames from clients handled in order as one batch: the state lock is taken once, and each
  // client's resulting frames are sent together after the last (one wake-up per client per
  // batch, not per message). Same per-client rules as received().
  void received(std::span<const Received> frames);

  // Frames queued for clients but not handed to the transport yet. A busy caller collects the
  // deliveries of several batches here and hands them over together with deliver(): each
  // client then takes one wake-up for all of them. Not thread-safe: one per caller thread.
  class Pending {
   public:
    bool empty() const { return touched_.empty(); }

   private:
    friend class ChatServer;
    std::vector<std::shared_ptr<Session>> touched_;
  };
  // received(frames), leaving the sending to deliver(pending). Everything else a client's
  // frames cause (evictions, closes) happens at once as with received().
  void received(std::span<const Received> frames, Pending& pending);
  // Sends what `pending` holds, as received() would have, and empties it.
  void deliver(Pending& pending);

  void writable(ClientId id);
  // The transport lost the client; its rooms see `part` with reason lost.
  void disconnected(ClientId id, transport::ServerEvent::Gone how, const std::string& detail);

  // Tells every client the server shuts down, sends what can be sent without waiting, and
  // closes every connection.
  void shutdown();

  ChatStats stats() const;

 private:
  struct Outbox;
  struct Room;
  // What handling one event left to do once the state lock is released.
  struct Effects {
    std::vector<std::shared_ptr<Session>> touched;     // outboxes that got frames: flush them
    std::vector<std::shared_ptr<Session>> over_limit;  // backlogs past client_queue_bytes
  };

  void receive_locked(ClientId id, std::span<const std::byte> frame, Effects& fx);
  void handle(Session& s, protocol::Message&& m, Effects& fx);
  void hello(Session& s, protocol::Hello&& m, Effects& fx);
  // Why `s` may not take `nick` (nick_reserved), or empty if it may.
  std::string reserved_for_other(const Session& s, const std::string& nick) const;
  void say(Session& s, protocol::Say&& m, Effects& fx);
  void join(Session& s, const std::string& room, Effects& fx);
  void part(Session& s, const std::string& room, protocol::PartReason reason, Effects& fx);
  void leave_everything(Session& s, protocol::PartReason reason, Effects& fx);
  void nick(Session& s, protocol::NickChange&& m, Effects& fx);
  void private_message(Session& s, protocol::PrivateSend&& m, Effects& fx);
  void whois(Session& s, const std::string& nick, Effects& fx);
  void who(Session& s, const std::string& room, Effects& fx);
  void rooms(Session& s, Effects& fx);

  void send(Session& s, const protocol::Message& m, Effects& fx);
  void send_frame(Session& s, std::shared_ptr<const protocol::Frame> frame, Effects& fx);
  void broadcast(Room& room, const protocol::Message& m, Effects& fx);
  void error(Session& s, std::string code, std::string text, Effects& fx);
  // Sends what is queued and closes the connection once the queue is empty.
  void end_after_flush(Session& s, Effects& fx);
  void evict(Session& s, Effects& fx);
  void forget(Session& s);
  void settle(Effects& fx);  // evicts over_limit (under the lock)
  void flush(Effects& fx);   // without the lock
  // Sends queued frames until the link is full; true if it closed the link.
  bool flush_one(Session& s);

  std::shared_ptr<Session> find_session(ClientId id) const;
  Room* find_room(const std::string& name);

  Link& link_;
  const Logger& logger_;
  const ChatOptions options_;
  mutable std::mutex mutex_;  // guards everything below and every Session's non-outbox state
  std::unordered_map<ClientId, std::shared_ptr<Session>> sessions_;
  std::unordered_map<std::string, Session*> by_nick_;   // folded nick -> named session
  std::map<std::string, std::unique_ptr<Room>> rooms_;  // folded room name -> room
  std::uint64_t messages_ = 0;
  std::uint64_t evictions_ = 0;
  bool shut_down_ = false;
};

}  // namespace chat::server

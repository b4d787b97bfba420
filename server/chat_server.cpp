#include "server/chat_server.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include "common/access.hpp"
#include "common/time.hpp"
#include "common/validate.hpp"
#include "server/dispatcher.hpp"  // kFramesPerSend

namespace chat::server {

namespace proto = protocol;
using Gone = transport::ServerEvent::Gone;

// Frames waiting for one client. Its mutex is taken after ChatServer::mutex_, never before,
// and is held while the Link sends, so sends and the close for one client never overlap.
struct ChatServer::Outbox {
  std::mutex mutex;
  std::deque<std::shared_ptr<const proto::Frame>> queue;
  std::size_t bytes = 0;
  bool blocked = false;           // the link said full; wait for writable()
  bool closed = false;            // the link is closed: drop everything
  bool close_when_empty = false;  // a goodbye: close the link once the queue is sent
};

struct ChatServer::Session : std::enable_shared_from_this<Session> {
  ClientId id = 0;
  pid_t pid = 0;
  uid_t uid = 0;
  std::string user;             // the account's login name (or uid), shown as `user`
  std::string nick;             // empty until the hello is accepted
  std::set<std::string> rooms;  // folded names of the rooms it is in
  bool ended = false;           // quit, refused or evicted: further input is ignored
  Outbox out;

  std::string describe() const {
    return "client " + std::to_string(id) + " (pid " + std::to_string(pid) + ", user " + user +
           (nick.empty() ? std::string() : ", nick " + nick) + ")";
  }
};

struct ChatServer::Room {
  std::string name;
  std::uint64_t seq = 0;  // of the last event announced
  std::map<ClientId, Session*> members;
  std::deque<proto::RoomMessage> history;
};

std::string ChatServer::reserved_for_other(const Session& s, const std::string& nick) const {
  if (!options_.reserve_account_nicks) return {};
  const std::optional<uid_t> owner = human_account_named(nick);
  if (!owner || *owner == s.uid) return {};
  return "nickname " + nick + " is reserved: it is the login name of another account";
}

ChatServer::ChatServer(Link& link, const Logger& logger, ChatOptions options)
    : link_(link), logger_(logger), options_(options) {}

ChatServer::~ChatServer() = default;

void ChatServer::connected(ClientId id, pid_t pid, uid_t uid) {
  auto s = std::make_shared<Session>();
  s->id = id;
  s->pid = pid;
  s->uid = uid;
  s->user = account_name(uid);
  std::lock_guard lock(mutex_);
  if (shut_down_) {
    link_.close(id);
    return;
  }
  sessions_[id] = std::move(s);
  logger_.debug("client " + std::to_string(id) + " connected (pid " + std::to_string(pid) +
                ", uid " + std::to_string(uid) + ")");
}

void ChatServer::received(ClientId id, std::span<const std::byte> frame) {
  const Received one{id, frame};
  received(std::span<const Received>(&one, 1));
}

void ChatServer::received(std::span<const Received> frames) {
  Pending pending;
  received(frames, pending);
  deliver(pending);
}

void ChatServer::received(std::span<const Received> frames, Pending& pending) {
  Effects fx;
  {
    std::lock_guard lock(mutex_);
    for (const auto& r : frames) {
      receive_locked(r.id, r.frame, fx);
      settle(fx);
    }
  }
  // Each client once (flush() sends its whole backlog), so pending stays as small as the
  // number of clients however many batches it collects.
  auto& touched = pending.touched_;
  touched.insert(touched.end(), std::make_move_iterator(fx.touched.begin()),
                 std::make_move_iterator(fx.touched.end()));
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
}

void ChatServer::deliver(Pending& pending) {
  if (pending.touched_.empty()) return;
  Effects fx;
  fx.touched = std::move(pending.touched_);
  pending.touched_.clear();
  flush(fx);
}

void ChatServer::receive_locked(ClientId id, std::span<const std::byte> frame, Effects& fx) {
  const auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->ended) return;
  Session& s = *it->second;
  proto::DecodeResult r = proto::decode(frame);
  if (r.message && !proto::is_client_message(*r.message)) {
    r.error = "a server message sent by a client";
    r.message.reset();
  }
  if (!r.message) {
    logger_.warn(s.describe() + " sent a malformed frame (" + r.error + "); disconnecting it");
    leave_everything(s, proto::PartReason::kLost, fx);
    forget(s);
    {
      std::lock_guard out(s.out.mutex);
      s.out.closed = true;
      s.out.queue.clear();
      link_.close(id);
    }
    sessions_.erase(it);
  } else {
    handle(s, std::move(*r.message), fx);
  }
}

void ChatServer::writable(ClientId id) {
  std::shared_ptr<Session> s = find_session(id);
  if (!s) return;
  {
    std::lock_guard out(s->out.mutex);
    s->out.blocked = false;
  }
  Effects fx;
  fx.touched.push_back(std::move(s));
  flush(fx);
}

void ChatServer::disconnected(ClientId id, Gone how, const std::string& detail) {
  Effects fx;
  {
    std::lock_guard lock(mutex_);
    const auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    Session& s = *it->second;
    if (how == Gone::kMalformed) {
      logger_.warn(s.describe() + " broke the transport's rules (" + detail + "); disconnected");
    } else if (!s.ended) {
      logger_.info(s.describe() + (how == Gone::kDied ? " died" : " hung up") +
                   " without saying goodbye");
    }
    if (!s.ended) leave_everything(s, proto::PartReason::kLost, fx);
    forget(s);
    {
      std::lock_guard out(s.out.mutex);
      s.out.closed = true;
      s.out.queue.clear();
      link_.close(id);
    }
    sessions_.erase(it);
    settle(fx);
  }
  flush(fx);
}

void ChatServer::shutdown() {
  std::vector<std::shared_ptr<Session>> all;
  {
    std::lock_guard lock(mutex_);
    shut_down_ = true;
    const auto frame = std::make_shared<const proto::Frame>(proto::encode(proto::Disconnected{}));
    for (auto& [id, s] : sessions_) {
      std::lock_guard out(s->out.mutex);
      if (!s->out.closed) {
        s->out.queue.push_back(frame);
        s->out.bytes += frame->size();
        s->out.close_when_empty = true;
      }
      all.push_back(s);
    }
  }
  for (auto& s : all) {
    std::lock_guard out(s->out.mutex);
    flush_one(*s);
    if (!s->out.closed) {  // the client is too slow to take even the goodbye
      s->out.closed = true;
      link_.close(s->id);
    }
  }
  std::lock_guard lock(mutex_);
  sessions_.clear();
  by_nick_.clear();
  rooms_.clear();
}

ChatStats ChatServer::stats() const {
  std::lock_guard lock(mutex_);
  ChatStats st;
  st.clients = by_nick_.size();
  st.rooms = rooms_.size();
  st.messages = messages_;
  st.evictions = evictions_;
  for (const auto& [key, room] : rooms_) {
    st.room_list.push_back({room->name, room->members.size(), room->seq, room->history.size()});
  }
  for (const auto& [id, s] : sessions_) {
    ClientStats c;
    c.id = id;
    c.pid = s->pid;
    c.nick = s->nick;
    for (const auto& key : s->rooms) c.rooms.push_back(rooms_.at(key)->name);
    {
      std::lock_guard out(s->out.mutex);
      c.queued_frames = s->out.queue.size();
      c.queued_bytes = s->out.bytes;
      c.blocked = s->out.blocked;
      // Under the outbox lock, like every send and close for the client.
      if (!s->out.closed) c.transport_bytes = link_.buffered(id);
    }
    st.queued_bytes += c.queued_bytes;
    st.transport_bytes += c.transport_bytes;
    st.client_list.push_back(std::move(c));
  }
  std::sort(st.client_list.begin(), st.client_list.end(),
            [](const ClientStats& a, const ClientStats& b) { return a.id < b.id; });
  return st;
}

// ---- commands (all with mutex_ held) ----

void ChatServer::handle(Session& s, proto::Message&& m, Effects& fx) {
  if (s.nick.empty() && !std::holds_alternative<proto::Hello>(m)) {
    logger_.warn(s.describe() + " sent a command before its hello; disconnecting it");
    error(s, "protocol", "hello expected first", fx);
    end_after_flush(s, fx);
    return;
  }
  std::visit(
      [&](auto&& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, proto::Hello>) {
          hello(s, std::move(v), fx);
        } else if constexpr (std::is_same_v<T, proto::Say>) {
          say(s, std::move(v), fx);
        } else if constexpr (std::is_same_v<T, proto::Join>) {
          join(s, v.room, fx);
        } else if constexpr (std::is_same_v<T, proto::Part>) {
          part(s, v.room, proto::PartReason::kLeft, fx);
        } else if constexpr (std::is_same_v<T, proto::PrivateSend>) {
          private_message(s, std::move(v), fx);
        } else if constexpr (std::is_same_v<T, proto::NickChange>) {
          nick(s, std::move(v), fx);
        } else if constexpr (std::is_same_v<T, proto::WhoRequest>) {
          who(s, v.room, fx);
        } else if constexpr (std::is_same_v<T, proto::RoomsRequest>) {
          rooms(s, fx);
        } else if constexpr (std::is_same_v<T, proto::WhoisRequest>) {
          whois(s, v.nick, fx);
        } else if constexpr (std::is_same_v<T, proto::Quit>) {
          logger_.info(s.describe() + " quit");
          leave_everything(s, proto::PartReason::kQuit, fx);
          end_after_flush(s, fx);
        } else if constexpr (std::is_same_v<T, proto::Sync>) {
          send(s, proto::SyncAck{v.token}, fx);
        }
      },
      std::move(m));
}

void ChatServer::hello(Session& s, proto::Hello&& m, Effects& fx) {
  if (!s.nick.empty()) {
    error(s, "protocol", "already said hello", fx);
    return;
  }
  const auto refuse = [&](const char* code, std::string text) {
    logger_.info(s.describe() + " refused: " + text);
    error(s, code, std::move(text), fx);
    end_after_flush(s, fx);
  };
  if (!is_valid_name(m.nick)) {
    return refuse("bad_nick", "invalid nickname (1-32 of A-Z a-z 0-9 _ - .)");
  }
  if (!is_valid_name(m.room)) return refuse("bad_room", "invalid room name");
  if (by_nick_.contains(fold_name(m.nick))) {
    return refuse("nick_in_use", "nickname " + m.nick + " is already in use");
  }
  if (const std::string why = reserved_for_other(s, m.nick); !why.empty()) {
    return refuse("nick_reserved", why);
  }
  if (by_nick_.size() >= options_.max_clients) {
    return refuse("server_full",
                  "the server is full (" + std::to_string(options_.max_clients) + " clients)");
  }
  s.nick = m.nick;
  by_nick_[fold_name(s.nick)] = &s;
  logger_.info(s.describe() + " joined the server");
  send(s, proto::Welcome{s.nick, m.room}, fx);
  join(s, m.room, fx);
}

void ChatServer::say(Session& s, proto::Say&& m, Effects& fx) {
  const TextError e = check_text(m.text);
  if (e != TextError::kNone) {
    return error(s, std::string(text_error_code(e)), std::string(text_error_message(e)), fx);
  }
  Room* room = find_room(m.room);
  if (room == nullptr || !room->members.contains(s.id)) {
    return error(s, "bad_room", "you are not in room " + m.room, fx);
  }
  proto::RoomMessage msg;
  msg.room = room->name;
  msg.from = s.nick;
  msg.uid = s.uid;
  msg.text = std::move(m.text);
  msg.seq = ++room->seq;
  msg.time_ms = now_unix_ms();
  msg.action = m.action;
  broadcast(*room, msg, fx);
  ++messages_;
  if (options_.history > 0) {
    room->history.push_back(std::move(msg));
    while (room->history.size() > options_.history) room->history.pop_front();
  }
}

void ChatServer::join(Session& s, const std::string& name, Effects& fx) {
  if (!is_valid_name(name)) return error(s, "bad_room", "invalid room name", fx);
  const std::string key = fold_name(name);
  auto& slot = rooms_[key];
  if (!slot) {
    slot = std::make_unique<Room>();
    slot->name = name;
  }
  Room& room = *slot;
  if (room.members.contains(s.id)) {
    send(s, proto::Notice{"you are already in " + room.name}, fx);
    return;
  }
  for (const auto& h : room.history) {
    proto::RoomMessage replay = h;
    replay.history = true;
    send(s, replay, fx);
  }
  room.members[s.id] = &s;
  s.rooms.insert(key);
  broadcast(room, proto::Joined{room.name, s.nick, ++room.seq, now_unix_ms(), s.uid}, fx);
}

void ChatServer::part(Session& s, const std::string& name, proto::PartReason reason, Effects& fx) {
  const std::string key = fold_name(name);
  const auto it = rooms_.find(key);
  if (it == rooms_.end() || !it->second->members.contains(s.id)) {
    return error(s, "bad_room", "you are not in room " + name, fx);
  }
  Room& room = *it->second;
  // The leaver sees its own part too: the last event of the room it receives.
  broadcast(room, proto::Parted{room.name, s.nick, ++room.seq, now_unix_ms(), reason, s.uid}, fx);
  room.members.erase(s.id);
  s.rooms.erase(key);
  if (room.members.empty()) rooms_.erase(it);
}

void ChatServer::leave_everything(Session& s, proto::PartReason reason, Effects& fx) {
  const std::set<std::string> rooms = s.rooms;
  for (const auto& key : rooms) part(s, rooms_.at(key)->name, reason, fx);
}

void ChatServer::nick(Session& s, proto::NickChange&& m, Effects& fx) {
  if (!is_valid_name(m.nick)) {
    return error(s, "bad_nick", "invalid nickname (1-32 of A-Z a-z 0-9 _ - .)", fx);
  }
  const std::string old_key = fold_name(s.nick), new_key = fold_name(m.nick);
  if (new_key != old_key && by_nick_.contains(new_key)) {
    return error(s, "nick_in_use", "nickname " + m.nick + " is already in use", fx);
  }
  if (const std::string why = reserved_for_other(s, m.nick); !why.empty()) {
    return error(s, "nick_reserved", why, fx);
  }
  if (m.nick == s.nick) return;
  const std::string old_nick = s.nick;
  by_nick_.erase(old_key);
  s.nick = m.nick;
  by_nick_[new_key] = &s;
  logger_.info("client " + std::to_string(s.id) + " renamed " + old_nick + " -> " + s.nick);
  if (s.rooms.empty()) {
    send(s, proto::NickChanged{old_nick, s.nick, "", 0, now_unix_ms()}, fx);
    return;
  }
  for (const auto& key : s.rooms) {
    Room& room = *rooms_.at(key);
    broadcast(room, proto::NickChanged{old_nick, s.nick, room.name, ++room.seq, now_unix_ms()}, fx);
  }
}

void ChatServer::private_message(Session& s, proto::PrivateSend&& m, Effects& fx) {
  const TextError e = check_text(m.text);
  if (e != TextError::kNone) {
    return error(s, std::string(text_error_code(e)), std::string(text_error_message(e)), fx);
  }
  const auto it = is_valid_name(m.to) ? by_nick_.find(fold_name(m.to)) : by_nick_.end();
  if (it == by_nick_.end()) return error(s, "no_such_nick", "no such nick: " + m.to, fx);
  Session& to = *it->second;
  const proto::PrivateMessage pm{s.nick, to.nick, std::move(m.text), now_unix_ms(), s.uid};
  const auto frame = std::make_shared<const proto::Frame>(proto::encode(pm));
  send_frame(to, frame, fx);
  if (&to != &s) send_frame(s, frame, fx);
}

void ChatServer::whois(Session& s, const std::string& nick, Effects& fx) {
  const auto it = is_valid_name(nick) ? by_nick_.find(fold_name(nick)) : by_nick_.end();
  if (it == by_nick_.end()) return error(s, "no_such_nick", "no such nick: " + nick, fx);
  const Session& who = *it->second;
  proto::WhoisReply reply{who.nick, static_cast<std::uint32_t>(who.uid), {}};
  for (const auto& key : who.rooms) {
    if (reply.rooms.size() == proto::kMaxWhoisRooms) break;
    reply.rooms.push_back(rooms_.at(key)->name);
  }
  send(s, reply, fx);
}

void ChatServer::who(Session& s, const std::string& name, Effects& fx) {
  Room* room = is_valid_name(name) ? find_room(name) : nullptr;
  if (room == nullptr) return error(s, "bad_room", "no such room: " + name, fx);
  std::vector<std::string> nicks;
  for (const auto& [id, member] : room->members) nicks.push_back(member->nick);
  std::sort(nicks.begin(), nicks.end(),
            [](const std::string& a, const std::string& b) { return fold_name(a) < fold_name(b); });
  std::size_t from = 0;
  do {
    const std::size_t n = proto::who_entries_that_fit(room->name, nicks, from);
    proto::WhoReply reply{room->name, {nicks.begin() + from, nicks.begin() + from + n}, false};
    from += n;
    reply.more = from < nicks.size();
    send(s, reply, fx);
  } while (from < nicks.size());
}

void ChatServer::rooms(Session& s, Effects& fx) {
  std::vector<proto::RoomInfo> list;
  for (const auto& [key, room] : rooms_) {
    list.push_back({room->name, static_cast<std::uint32_t>(room->members.size())});
  }
  std::size_t from = 0;
  do {
    const std::size_t n = proto::rooms_entries_that_fit(list, from);
    proto::RoomsReply reply{{list.begin() + from, list.begin() + from + n}, false};
    from += n;
    reply.more = from < list.size();
    send(s, reply, fx);
  } while (from < list.size());
}

// ---- delivery ----

void ChatServer::send(Session& s, const proto::Message& m, Effects& fx) {
  send_frame(s, std::make_shared<const proto::Frame>(proto::encode(m)), fx);
}

void ChatServer::send_frame(Session& s, std::shared_ptr<const proto::Frame> frame, Effects& fx) {
  bool over;
  {
    std::lock_guard out(s.out.mutex);
    if (s.out.closed) return;
    s.out.bytes += frame->size();
    s.out.queue.push_back(std::move(frame));
    // Frames the link was never offered are no backlog: a batch queues a lot before its one
    // flush, so try the link before calling a client too slow (it does nothing if blocked).
    if (s.out.bytes > options_.client_queue_bytes && !s.ended) flush_one(s);
    over = s.out.bytes > options_.client_queue_bytes;
  }
  fx.touched.push_back(s.shared_from_this());
  if (over) fx.over_limit.push_back(s.shared_from_this());
}

void ChatServer::broadcast(Room& room, const proto::Message& m, Effects& fx) {
  const auto frame = std::make_shared<const proto::Frame>(proto::encode(m));
  for (const auto& [id, member] : room.members) send_frame(*member, frame, fx);
}

void ChatServer::error(Session& s, std::string code, std::string text, Effects& fx) {
  send(s, proto::Error{std::move(code), std::move(text)}, fx);
}

void ChatServer::end_after_flush(Session& s, Effects& fx) {
  s.ended = true;
  forget(s);
  std::lock_guard out(s.out.mutex);
  s.out.close_when_empty = true;
  fx.touched.push_back(s.shared_from_this());
}

void ChatServer::evict(Session& s, Effects& fx) {
  if (s.ended) return;
  std::size_t backlog;
  {
    std::lock_guard out(s.out.mutex);
    backlog = s.out.bytes;
    s.out.closed = true;
    s.out.queue.clear();
    s.out.bytes = 0;
    link_.close(s.id);
  }
  ++evictions_;
  logger_.warn(s.describe() + " evicted: " + std::to_string(backlog) +
               " bytes waiting, more than client_queue_bytes");
  s.ended = true;
  leave_everything(s, proto::PartReason::kEvicted, fx);
  forget(s);
  sessions_.erase(s.id);
}

void ChatServer::forget(Session& s) {
  if (!s.nick.empty()) {
    const auto it = by_nick_.find(fold_name(s.nick));
    if (it != by_nick_.end() && it->second == &s) by_nick_.erase(it);
  }
}

void ChatServer::settle(Effects& fx) {
  // Evicting announces parts, which can push further members over the limit.
  while (!fx.over_limit.empty()) {
    auto s = std::move(fx.over_limit.back());
    fx.over_limit.pop_back();
    evict(*s, fx);
  }
}

void ChatServer::flush(Effects& fx) {
  std::vector<ClientId> closed;
  // Each client once, however many frames it got: its whole backlog goes out as one batch.
  std::sort(fx.touched.begin(), fx.touched.end());
  fx.touched.erase(std::unique(fx.touched.begin(), fx.touched.end()), fx.touched.end());
  for (const auto& s : fx.touched) {
    std::lock_guard out(s->out.mutex);
    if (flush_one(*s)) closed.push_back(s->id);
  }
  if (closed.empty()) return;
  std::lock_guard lock(mutex_);
  for (ClientId id : closed) sessions_.erase(id);
}

bool ChatServer::flush_one(Session& s) {
  Outbox& o = s.out;
  while (!o.blocked && !o.closed && !o.queue.empty()) {
    std::array<std::span<const std::byte>, kFramesPerSend> frames;
    const std::size_t n = std::min(kFramesPerSend, o.queue.size());
    for (std::size_t i = 0; i < n; ++i) frames[i] = *o.queue[i];
    SendResult r = SendResult::kSent;
    const std::size_t sent = link_.send_batch(s.id, std::span(frames.data(), n), r);
    for (std::size_t i = 0; i < sent; ++i) {
      o.bytes -= o.queue.front()->size();
      o.queue.pop_front();
    }
    if (r == SendResult::kFull) {
      o.blocked = true;
    } else if (r != SendResult::kSent) {
      // The transport reports the disconnect itself; until then nothing can be delivered.
      o.queue.clear();
      o.bytes = 0;
      return false;
    }
  }
  if (o.queue.empty() && o.close_when_empty && !o.closed) {
    o.closed = true;
    link_.close(s.id);
    return true;
  }
  return false;
}

std::shared_ptr<ChatServer::Session> ChatServer::find_session(ClientId id) const {
  std::lock_guard lock(mutex_);
  const auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

ChatServer::Room* ChatServer::find_room(const std::string& name) {
  const auto it = rooms_.find(fold_name(name));
  return it == rooms_.end() ? nullptr : it->second.get();
}

}  // namespace chat::server

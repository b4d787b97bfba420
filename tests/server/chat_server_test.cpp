// The chat logic (server/chat_server.hpp) driven directly through a recording Link: sessions,
// rooms, commands, history, slow and broken clients, shutdown, and several threads at once.
#include "server/chat_server.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "common/limits.hpp"
#include "common/log.hpp"
#include "common/time.hpp"

namespace chat::server {
namespace {

namespace proto = protocol;
using proto::Message;
using Gone = transport::ServerEvent::Gone;

// A Link that keeps every frame it is given, decoded, per client. Each client can be made
// "full" (send returns kFull) after a number of further frames. Thread-safe.
class RecordingLink final : public Link {
 public:
  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    std::lock_guard lock(mutex_);
    Client& c = clients_[id];
    if (c.closed) {
      ++sends_after_close_;
      return SendResult::kGone;
    }
    if (c.gone) return SendResult::kGone;
    if (c.budget == 0) {
      ++c.fulls;
      return SendResult::kFull;
    }
    if (c.budget > 0) --c.budget;
    if (frame.size() > kMaxFrameBytes) ++oversized_;
    proto::DecodeResult r = proto::decode(frame);
    if (!r.message) {
      decode_errors_.push_back(r.error);
      return SendResult::kSent;
    }
    c.messages.push_back(std::move(*r.message));
    return SendResult::kSent;
  }

  void close(ClientId id) override {
    std::lock_guard lock(mutex_);
    Client& c = clients_[id];
    ++c.closes;
    c.closed = true;
  }

  std::size_t buffered(ClientId) override { return 0; }  // what it records counts as read

  // From now on, send() to `id` accepts `frames` more frames, then returns kFull (-1: no limit).
  void allow(ClientId id, long frames) {
    std::lock_guard lock(mutex_);
    clients_[id].budget = frames;
  }
  void set_full(ClientId id) { allow(id, 0); }
  // From now on, send() to `id` returns kGone, as when the peer vanished.
  void set_gone(ClientId id) {
    std::lock_guard lock(mutex_);
    clients_[id].gone = true;
  }
  // How many times send() to `id` returned kFull.
  int fulls(ClientId id) const {
    std::lock_guard lock(mutex_);
    const auto it = clients_.find(id);
    return it == clients_.end() ? 0 : it->second.fulls;
  }

  std::vector<Message> messages(ClientId id) const {
    std::lock_guard lock(mutex_);
    const auto it = clients_.find(id);
    return it == clients_.end() ? std::vector<Message>{} : it->second.messages;
  }
  int closes(ClientId id) const {
    std::lock_guard lock(mutex_);
    const auto it = clients_.find(id);
    return it == clients_.end() ? 0 : it->second.closes;
  }
  void clear(ClientId id) {
    std::lock_guard lock(mutex_);
    clients_[id].messages.clear();
  }
  int sends_after_close() const {
    std::lock_guard lock(mutex_);
    return sends_after_close_;
  }
  int oversized() const {
    std::lock_guard lock(mutex_);
    return oversized_;
  }
  std::vector<std::string> decode_errors() const {
    std::lock_guard lock(mutex_);
    return decode_errors_;
  }

 private:
  struct Client {
    std::vector<Message> messages;
    long budget = -1;
    int closes = 0;
    int fulls = 0;
    bool closed = false;
    bool gone = false;
  };
  mutable std::mutex mutex_;
  std::map<ClientId, Client> clients_;
  int sends_after_close_ = 0;
  int oversized_ = 0;
  std::vector<std::string> decode_errors_;
};

// A ChatServer on a RecordingLink, with helpers to act as clients.
class Harness {
 public:
  explicit Harness(ChatOptions options = {}) : server(link, logger, options) {}
  ~Harness() {
    BOOST_TEST(link.sends_after_close() == 0, "frames were sent after close()");
    BOOST_TEST(link.oversized() == 0, "frames larger than kMaxFrameBytes were sent");
    BOOST_TEST(link.decode_errors().empty(), "the server sent frames that do not decode");
  }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  void connect(ClientId id, uid_t uid = ::geteuid()) {
    server.connected(id, static_cast<pid_t>(1000 + id), uid);
  }
  void send(ClientId id, const Message& m) {
    const proto::Frame f = proto::encode(m);
    server.received(id, f);
  }
  void hello(ClientId id, const std::string& nick, const std::string& room = "lobby") {
    connect(id);
    send(id, proto::Hello{nick, room});
  }
  void say(ClientId id, const std::string& text, const std::string& room = "lobby") {
    send(id, proto::Say{room, text, false});
  }
  std::vector<Message> of(ClientId id) const { return link.messages(id); }
  void clear(ClientId id) { link.clear(id); }

  RecordingLink link;
  Logger logger{"chat_server_test", LogLevel::kError};
  ChatServer server;
};

template <typename T>
std::vector<T> all_of(const std::vector<Message>& msgs) {
  std::vector<T> out;
  for (const auto& m : msgs) {
    if (const T* v = std::get_if<T>(&m)) out.push_back(*v);
  }
  return out;
}

template <typename T>
bool is(const Message& m) {
  return std::holds_alternative<T>(m);
}

// The error codes among `msgs`.
std::vector<std::string> error_codes(const std::vector<Message>& msgs) {
  std::vector<std::string> out;
  for (const auto& e : all_of<proto::Error>(msgs)) out.push_back(e.code);
  return out;
}

// One room event as a string, identical for every member that receives it.
std::string describe(const Message& m) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, proto::RoomMessage>) {
          return "msg " + v.from + (v.action ? " * " : ": ") + v.text;
        } else if constexpr (std::is_same_v<T, proto::Joined>) {
          return "join " + v.nick;
        } else if constexpr (std::is_same_v<T, proto::Parted>) {
          return "part " + v.nick + " " + std::string(proto::to_string(v.reason));
        } else if constexpr (std::is_same_v<T, proto::NickChanged>) {
          return "nick " + v.old_nick + " -> " + v.new_nick;
        } else {
          return "";
        }
      },
      m);
}

// The room of a live room event (not a history replay), and its seq.
bool room_event(const Message& m, std::string& room, std::uint64_t& seq) {
  if (const auto* v = std::get_if<proto::RoomMessage>(&m)) {
    if (v->history) return false;
    room = v->room, seq = v->seq;
  } else if (const auto* j = std::get_if<proto::Joined>(&m)) {
    room = j->room, seq = j->seq;
  } else if (const auto* p = std::get_if<proto::Parted>(&m)) {
    room = p->room, seq = p->seq;
  } else if (const auto* n = std::get_if<proto::NickChanged>(&m); n && !n->room.empty()) {
    room = n->room, seq = n->seq;
  } else {
    return false;
  }
  return true;
}

// The seqs of the live events of `room` in `msgs`, in arrival order.
std::vector<std::uint64_t> seqs(const std::vector<Message>& msgs, const std::string& room) {
  std::vector<std::uint64_t> out;
  std::string r;
  std::uint64_t seq;
  for (const auto& m : msgs) {
    if (room_event(m, r, seq) && r == room) out.push_back(seq);
  }
  return out;
}

bool contiguous(const std::vector<std::uint64_t>& s) {
  for (std::size_t i = 1; i < s.size(); ++i) {
    if (s[i] != s[i - 1] + 1) return false;
  }
  return true;
}

std::vector<std::string> texts(const std::vector<Message>& msgs) {
  std::vector<std::string> out;
  for (const auto& m : all_of<proto::RoomMessage>(msgs)) out.push_back(m.text);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(chat_server)

BOOST_AUTO_TEST_CASE(hello_gets_welcome_and_join) {
  Harness h;
  const auto before = now_unix_ms();
  h.hello(1, "alice");
  const auto m = h.of(1);
  BOOST_TEST_REQUIRE(m.size() == 2u);
  const auto& w = std::get<proto::Welcome>(m[0]);
  BOOST_TEST(w.nick == "alice");
  BOOST_TEST(w.room == "lobby");
  const auto& j = std::get<proto::Joined>(m[1]);
  BOOST_TEST(j.room == "lobby");
  BOOST_TEST(j.nick == "alice");
  BOOST_TEST(j.seq == 1u);
  BOOST_TEST(j.time_ms >= before);
  BOOST_TEST(j.time_ms <= now_unix_ms());
  BOOST_TEST(h.server.stats().clients == 1u);
  BOOST_TEST(h.server.stats().rooms == 1u);
}

BOOST_AUTO_TEST_CASE(events_carry_the_account_the_kernel_named) {
  Harness h;
  h.connect(1, 0);
  h.send(1, proto::Hello{"alice", "lobby"});
  h.connect(2, 4'000'000'000u);
  h.send(2, proto::Hello{"bob", "lobby"});
  h.say(2, "hi");
  h.send(2, proto::PrivateSend{"alice", "psst"});
  h.send(2, proto::Part{"lobby"});
  const auto msgs = h.of(1);
  BOOST_TEST(all_of<proto::Joined>(msgs).at(0).uid == 0u);
  BOOST_TEST(all_of<proto::Joined>(msgs).at(1).uid == 4'000'000'000u);
  BOOST_TEST(all_of<proto::RoomMessage>(msgs).at(0).uid == 4'000'000'000u);
  BOOST_TEST(all_of<proto::PrivateMessage>(msgs).at(0).uid == 4'000'000'000u);
  BOOST_TEST(all_of<proto::Parted>(msgs).at(0).uid == 4'000'000'000u);
}

// The login name of a human account (uid >= 1000) on this machine, if there is one.
std::optional<std::pair<std::string, uid_t>> some_human_account() {
  for (const char* name : {"ipchat-ann", "ipchat-bob"}) {
    if (const passwd* pw = ::getpwnam(name); pw != nullptr) return std::pair{name, pw->pw_uid};
  }
  return std::nullopt;
}

BOOST_AUTO_TEST_CASE(nick_of_another_account_is_reserved_only_when_accounts_share_a_server) {
  const auto account = some_human_account();
  if (!account) {
    BOOST_TEST_MESSAGE("skipped: no test account (scripts/test-accounts.sh creates them)");
    return;
  }
  const auto& [name, uid] = *account;
  {
    ChatOptions o;
    o.reserve_account_nicks = true;
    Harness h(o);
    h.connect(1, uid + 100);
    h.send(1, proto::Hello{name, "lobby"});
    BOOST_TEST(error_codes(h.of(1)) == std::vector<std::string>{"nick_reserved"});
    h.connect(2, uid + 100);
    h.send(2, proto::Hello{"someone", "lobby"});
    h.send(2, proto::NickChange{name});
    BOOST_TEST(error_codes(h.of(2)) == std::vector<std::string>{"nick_reserved"});
    // The account itself may use its own name, in any case.
    h.connect(3, uid);
    std::string upper = name;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    h.send(3, proto::Hello{upper, "lobby"});
    BOOST_TEST(error_codes(h.of(3)).empty());
  }
  {
    Harness h;  // one account only (--access=user): names are free
    h.connect(1, uid + 100);
    h.send(1, proto::Hello{name, "lobby"});
    BOOST_TEST(error_codes(h.of(1)).empty());
  }
}

BOOST_AUTO_TEST_CASE(whois_names_the_account_and_the_rooms) {
  Harness h;
  h.connect(1, 1002);
  h.send(1, proto::Hello{"ann", "lobby"});
  h.send(1, proto::Join{"dev"});
  h.hello(2, "bob");
  h.send(2, proto::WhoisRequest{"ANN"});
  h.send(2, proto::WhoisRequest{"nobody"});
  const auto replies = all_of<proto::WhoisReply>(h.of(2));
  BOOST_REQUIRE_EQUAL(replies.size(), 1u);
  BOOST_TEST(replies[0].nick == "ann");
  BOOST_TEST(replies[0].uid == 1002u);
  BOOST_TEST((replies[0].rooms == std::vector<std::string>{"dev", "lobby"}));
  BOOST_TEST(error_codes(h.of(2)) == std::vector<std::string>{"no_such_nick"});
}

BOOST_AUTO_TEST_CASE(second_client_sees_join_seq_2) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  const auto b = h.of(2);
  BOOST_TEST_REQUIRE(b.size() == 2u);
  BOOST_TEST(std::get<proto::Welcome>(b[0]).nick == "bob");
  BOOST_TEST(std::get<proto::Joined>(b[1]).seq == 2u);
  const auto a = h.of(1);
  BOOST_TEST_REQUIRE(a.size() == 3u);
  BOOST_TEST(std::get<proto::Joined>(a[2]).nick == "bob");
  BOOST_TEST(std::get<proto::Joined>(a[2]).seq == 2u);
}

BOOST_AUTO_TEST_CASE(messages_reach_every_member_in_one_order_with_echo) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.hello(3, "carol", "elsewhere");
  h.say(1, "hi");
  h.say(2, "yo");
  h.say(1, "again");
  h.send(2, proto::Say{"lobby", "waves", true});
  for (ClientId id : {1u, 2u}) {
    const auto msgs = all_of<proto::RoomMessage>(h.of(id));
    BOOST_TEST_REQUIRE(msgs.size() == 4u);
    BOOST_TEST(msgs[0].from == "alice");
    BOOST_TEST(msgs[0].text == "hi");
    BOOST_TEST(msgs[1].from == "bob");
    BOOST_TEST(msgs[2].text == "again");
    BOOST_TEST(msgs[3].text == "waves");
    BOOST_TEST(msgs[3].action);
    BOOST_TEST(!msgs[0].action);
    for (std::size_t i = 0; i < msgs.size(); ++i) {
      BOOST_TEST(msgs[i].seq == 3 + i);
      BOOST_TEST(msgs[i].room == "lobby");
      BOOST_TEST(!msgs[i].history);
    }
    BOOST_TEST(contiguous(seqs(h.of(id), "lobby")));
  }
  BOOST_TEST(all_of<proto::RoomMessage>(h.of(3)).empty());  // another room
  BOOST_TEST(h.server.stats().messages == 4u);
}

BOOST_AUTO_TEST_CASE(duplicate_nick_is_refused_case_insensitively) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "ALICE");
  const auto m = h.of(2);
  BOOST_TEST_REQUIRE(m.size() == 1u);
  BOOST_TEST(std::get<proto::Error>(m[0]).code == "nick_in_use");
  BOOST_TEST(h.link.closes(2) == 1);
  BOOST_TEST(h.of(1).size() == 2u);  // no join announced
  BOOST_TEST(h.server.stats().clients == 1u);
  h.say(2, "sneaky");  // ignored: the session ended
  BOOST_TEST(h.of(1).size() == 2u);
}

BOOST_AUTO_TEST_CASE(bad_nick_and_bad_room_are_refused) {
  Harness h;
  ClientId id = 1;
  for (const std::string& nick : std::vector<std::string>{
           "", "a b", "a/b", std::string(kMaxNameBytes + 1, 'n'), "caf\xC3\xA9"}) {
    h.hello(id, nick);
    const auto m = h.of(id);
    BOOST_TEST_REQUIRE(m.size() == 1u);
    BOOST_TEST(std::get<proto::Error>(m[0]).code == "bad_nick");
    BOOST_TEST(h.link.closes(id) == 1);
    ++id;
  }
  for (const std::string& room :
       std::vector<std::string>{"", "a/b", "#lobby", std::string(kMaxNameBytes + 1, 'r')}) {
    h.hello(id, "nick" + std::to_string(id), room);
    const auto m = h.of(id);
    BOOST_TEST_REQUIRE(m.size() == 1u);
    BOOST_TEST(std::get<proto::Error>(m[0]).code == "bad_room");
    BOOST_TEST(h.link.closes(id) == 1);
    ++id;
  }
  BOOST_TEST(h.server.stats().clients == 0u);
  BOOST_TEST(h.server.stats().rooms == 0u);
}

BOOST_AUTO_TEST_CASE(server_full) {
  ChatOptions o;
  o.max_clients = 2;
  Harness h(o);
  h.hello(1, "a");
  h.hello(2, "b");
  h.hello(3, "c");
  BOOST_TEST(error_codes(h.of(3)) == std::vector<std::string>{"server_full"});
  BOOST_TEST(h.link.closes(3) == 1);
  // A place frees up when someone leaves.
  h.send(1, proto::Quit{"bye"});
  h.hello(4, "d");
  BOOST_TEST(is<proto::Welcome>(h.of(4).at(0)));
}

BOOST_AUTO_TEST_CASE(sync_is_acknowledged_after_earlier_messages) {
  Harness h;
  h.hello(1, "alice");
  h.say(1, "one");
  h.send(1, proto::Sync{42});
  h.say(1, "two");
  h.send(1, proto::Sync{43});
  const auto m = h.of(1);
  BOOST_TEST_REQUIRE(m.size() == 6u);
  BOOST_TEST(std::get<proto::RoomMessage>(m[2]).text == "one");
  BOOST_TEST(std::get<proto::SyncAck>(m[3]).token == 42u);
  BOOST_TEST(std::get<proto::RoomMessage>(m[4]).text == "two");
  BOOST_TEST(std::get<proto::SyncAck>(m[5]).token == 43u);
}

BOOST_AUTO_TEST_CASE(join_and_part) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.send(1, proto::Join{"Dev"});
  auto a = h.of(1);
  BOOST_TEST(std::get<proto::Joined>(a.back()).room == "Dev");
  BOOST_TEST(std::get<proto::Joined>(a.back()).seq == 1u);  // each room counts on its own
  BOOST_TEST(seqs(h.of(2), "Dev").empty());
  h.send(2, proto::Join{"dev"});  // the same room, whatever the case
  BOOST_TEST(std::get<proto::Joined>(h.of(2).back()).room == "Dev");
  BOOST_TEST(std::get<proto::Joined>(h.of(2).back()).seq == 2u);
  BOOST_TEST(std::get<proto::Joined>(h.of(1).back()).nick == "bob");
  // Joining again is a notice, not an event.
  h.send(2, proto::Join{"DEV"});
  BOOST_TEST(is<proto::Notice>(h.of(2).back()));
  BOOST_TEST((seqs(h.of(1), "Dev") == std::vector<std::uint64_t>{1, 2}));
  h.send(2, proto::Join{"no/slash"});
  BOOST_TEST(std::get<proto::Error>(h.of(2).back()).code == "bad_room");

  h.send(1, proto::Part{"dev"});
  const auto pa = std::get<proto::Parted>(h.of(1).back());  // the leaver sees its own part
  BOOST_TEST(pa.nick == "alice");
  BOOST_TEST(pa.seq == 3u);
  BOOST_TEST((pa.reason == proto::PartReason::kLeft));
  BOOST_TEST(std::get<proto::Parted>(h.of(2).back()).seq == 3u);
  h.clear(1);
  h.say(2, "only bob", "dev");
  BOOST_TEST(all_of<proto::RoomMessage>(h.of(1)).empty());
  h.say(1, "not in dev", "dev");
  BOOST_TEST(error_codes(h.of(1)) == std::vector<std::string>{"bad_room"});
  h.send(1, proto::Part{"dev"});
  BOOST_TEST(std::get<proto::Error>(h.of(1).back()).code == "bad_room");
  h.send(1, proto::Part{"nowhere"});
  BOOST_TEST(std::get<proto::Error>(h.of(1).back()).code == "bad_room");
  // The last member leaves: the room goes, and a new one starts counting again.
  BOOST_TEST(h.server.stats().rooms == 2u);
  h.send(2, proto::Part{"dev"});
  BOOST_TEST(h.server.stats().rooms == 1u);
  h.send(1, proto::Join{"dev"});
  BOOST_TEST(std::get<proto::Joined>(h.of(1).back()).seq == 1u);
}

BOOST_AUTO_TEST_CASE(who_is_sorted) {
  Harness h;
  h.hello(1, "charlie");
  h.hello(2, "Alice");
  h.hello(3, "bob");
  h.hello(4, "dave", "other");
  h.send(3, proto::WhoRequest{"LOBBY"});
  const auto who = std::get<proto::WhoReply>(h.of(3).back());
  BOOST_TEST(who.room == "lobby");
  BOOST_TEST((who.nicks == std::vector<std::string>{"Alice", "bob", "charlie"}));
  BOOST_TEST(!who.more);
  h.send(3, proto::WhoRequest{"nosuch"});
  BOOST_TEST(std::get<proto::Error>(h.of(3).back()).code == "bad_room");
  h.send(3, proto::WhoRequest{"bad room"});
  BOOST_TEST(std::get<proto::Error>(h.of(3).back()).code == "bad_room");
}

BOOST_AUTO_TEST_CASE(who_of_a_big_room_comes_in_chunks) {
  ChatOptions o;
  o.max_clients = 300;
  Harness h(o);
  std::vector<std::string> nicks;
  for (ClientId id = 1; id <= 200; ++id) {
    std::string nick = "n" + std::to_string(1000 + id);
    nick.resize(kMaxNameBytes, 'x');
    nicks.push_back(nick);
    h.hello(id, nick);
  }
  h.clear(1);
  h.send(1, proto::WhoRequest{"lobby"});
  const auto replies = all_of<proto::WhoReply>(h.of(1));
  BOOST_TEST_REQUIRE(replies.size() >= 2u);
  std::vector<std::string> got;
  for (std::size_t i = 0; i < replies.size(); ++i) {
    BOOST_TEST(replies[i].more == (i + 1 < replies.size()));
    got.insert(got.end(), replies[i].nicks.begin(), replies[i].nicks.end());
  }
  BOOST_TEST(got == nicks);
}

BOOST_AUTO_TEST_CASE(rooms_lists_every_room_with_its_members) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.send(1, proto::Join{"Dev"});
  h.send(2, proto::RoomsRequest{});
  const auto r = std::get<proto::RoomsReply>(h.of(2).back());
  BOOST_TEST(!r.more);
  BOOST_TEST((r.rooms == std::vector<proto::RoomInfo>{{"Dev", 1}, {"lobby", 2}}));
}

BOOST_AUTO_TEST_CASE(private_messages) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.hello(3, "carol");
  h.send(1, proto::PrivateSend{"BOB", "psst"});
  for (ClientId id : {1u, 2u}) {
    const auto pm = all_of<proto::PrivateMessage>(h.of(id));
    BOOST_TEST_REQUIRE(pm.size() == 1u);
    BOOST_TEST(pm[0].from == "alice");
    BOOST_TEST(pm[0].to == "bob");
    BOOST_TEST(pm[0].text == "psst");
  }
  BOOST_TEST(all_of<proto::PrivateMessage>(h.of(3)).empty());
  // To oneself: one copy.
  h.send(3, proto::PrivateSend{"carol", "note to self"});
  BOOST_TEST(all_of<proto::PrivateMessage>(h.of(3)).size() == 1u);
  h.send(1, proto::PrivateSend{"nobody", "hello?"});
  BOOST_TEST(std::get<proto::Error>(h.of(1).back()).code == "no_such_nick");
  h.send(1, proto::PrivateSend{"bad nick!", "hello?"});
  BOOST_TEST(std::get<proto::Error>(h.of(1).back()).code == "no_such_nick");
  h.send(1, proto::PrivateSend{"bob", "bad\x1b[2J"});
  BOOST_TEST(std::get<proto::Error>(h.of(1).back()).code == "bad_text");
  h.send(1, proto::PrivateSend{"bob", std::string(kMaxTextBytes + 1, 'x')});
  BOOST_TEST(std::get<proto::Error>(h.of(1).back()).code == "too_long");
  BOOST_TEST(all_of<proto::PrivateMessage>(h.of(2)).size() == 1u);
}

BOOST_AUTO_TEST_CASE(nick_change_is_announced_per_room) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.send(1, proto::Join{"dev"});
  h.clear(1);
  h.clear(2);
  h.send(1, proto::NickChange{"alicia"});
  const auto a = all_of<proto::NickChanged>(h.of(1));
  BOOST_TEST_REQUIRE(a.size() == 2u);
  std::set<std::string> rooms;
  for (const auto& n : a) {
    BOOST_TEST(n.old_nick == "alice");
    BOOST_TEST(n.new_nick == "alicia");
    rooms.insert(n.room);
  }
  BOOST_TEST((rooms == std::set<std::string>{"dev", "lobby"}));
  const auto b = all_of<proto::NickChanged>(h.of(2));
  BOOST_TEST_REQUIRE(b.size() == 1u);
  BOOST_TEST(b[0].room == "lobby");
  BOOST_TEST(b[0].seq == 3u);  // alice join, bob join, the nick change
  BOOST_TEST(contiguous(seqs(h.of(2), "lobby")));
  // Messages now carry the new nick, and the old one is free.
  h.say(1, "renamed");
  BOOST_TEST(all_of<proto::RoomMessage>(h.of(2)).back().from == "alicia");
  h.hello(3, "Alice");
  BOOST_TEST(is<proto::Welcome>(h.of(3).at(0)));
  // Taken, case-insensitively; invalid.
  h.send(1, proto::NickChange{"BOB"});
  BOOST_TEST(std::get<proto::Error>(h.of(1).back()).code == "nick_in_use");
  h.send(1, proto::NickChange{"b o b"});
  BOOST_TEST(std::get<proto::Error>(h.of(1).back()).code == "bad_nick");
  // Changing only the case of one's own nick is allowed.
  h.send(2, proto::NickChange{"Bob"});
  BOOST_TEST(std::get<proto::NickChanged>(h.of(2).back()).new_nick == "Bob");
  // Outside every room, the change goes to the user alone, without a room.
  h.send(1, proto::Part{"lobby"});
  h.send(1, proto::Part{"dev"});
  h.clear(2);
  h.send(1, proto::NickChange{"solo"});
  const auto solo = std::get<proto::NickChanged>(h.of(1).back());
  BOOST_TEST(solo.room == "");
  BOOST_TEST(solo.new_nick == "solo");
  BOOST_TEST(all_of<proto::NickChanged>(h.of(2)).empty());
}

BOOST_AUTO_TEST_CASE(history_is_replayed_before_the_join) {
  ChatOptions o;
  o.history = 3;
  Harness h(o);
  h.hello(1, "alice");
  for (int i = 1; i <= 5; ++i) h.say(1, "m" + std::to_string(i));
  h.send(1, proto::Say{"lobby", "acts", true});
  h.hello(2, "bob");
  h.say(1, "live");
  const auto b = h.of(2);
  BOOST_TEST_REQUIRE(b.size() == 6u);
  BOOST_TEST(is<proto::Welcome>(b[0]));
  const std::vector<std::string> replayed = {"m4", "m5", "acts"};
  for (int i = 0; i < 3; ++i) {
    const auto& m = std::get<proto::RoomMessage>(b[1 + i]);
    BOOST_TEST(m.history);
    BOOST_TEST(m.text == replayed[i]);
    BOOST_TEST(m.seq == 5u + i);  // their original seqs (alice's join was 1)
  }
  BOOST_TEST(std::get<proto::RoomMessage>(b[3]).action);
  BOOST_TEST(std::get<proto::Joined>(b[4]).seq == 8u);
  const auto& live = std::get<proto::RoomMessage>(b[5]);
  BOOST_TEST(!live.history);
  BOOST_TEST(live.text == "live");
  BOOST_TEST(live.seq == 9u);
  // The members who were there see no replays.
  for (const auto& m : all_of<proto::RoomMessage>(h.of(1))) BOOST_TEST(!m.history);
}

BOOST_AUTO_TEST_CASE(no_history_when_disabled) {
  ChatOptions o;
  o.history = 0;
  Harness h(o);
  h.hello(1, "alice");
  h.say(1, "gone");
  h.hello(2, "bob");
  BOOST_TEST(all_of<proto::RoomMessage>(h.of(2)).empty());
}

BOOST_AUTO_TEST_CASE(bad_text_is_refused_and_sends_nothing) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.clear(2);
  h.say(1, std::string(kMaxTextBytes + 1, 'x'));
  h.say(1, "");
  h.say(1, "clear\x1b[2J");
  h.say(1, "line\nbreak");
  h.say(1, "\xC0\xAF");
  h.send(1, proto::Say{"lobby", "", true});
  BOOST_TEST(
      (error_codes(h.of(1)) == std::vector<std::string>{"too_long", "bad_text", "bad_text",
                                                        "bad_text", "bad_text", "bad_text"}));
  BOOST_TEST(h.of(2).empty());
  // No seq was used up.
  h.say(1, std::string(kMaxTextBytes, 'x'));
  const auto got = all_of<proto::RoomMessage>(h.of(2));
  BOOST_TEST_REQUIRE(got.size() == 1u);
  BOOST_TEST(got[0].seq == 3u);
}

BOOST_AUTO_TEST_CASE(command_before_hello_ends_the_session) {
  Harness h;
  h.connect(1);
  h.send(1, proto::Join{"lobby"});
  BOOST_TEST(error_codes(h.of(1)) == std::vector<std::string>{"protocol"});
  BOOST_TEST(h.link.closes(1) == 1);
  h.send(1, proto::Hello{"alice", "lobby"});  // too late
  BOOST_TEST(h.of(1).size() == 1u);
}

BOOST_AUTO_TEST_CASE(second_hello_is_an_error_but_keeps_the_session) {
  Harness h;
  h.hello(1, "alice");
  h.send(1, proto::Hello{"other", "lobby"});
  BOOST_TEST(std::get<proto::Error>(h.of(1).back()).code == "protocol");
  BOOST_TEST(h.link.closes(1) == 0);
  h.say(1, "still here");
  BOOST_TEST(all_of<proto::RoomMessage>(h.of(1)).size() == 1u);
}

BOOST_AUTO_TEST_CASE(malformed_frame_disconnects_only_that_client) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.hello(3, "carol");
  h.send(2, proto::Join{"dev"});
  h.send(1, proto::Join{"dev"});
  h.clear(1);
  h.clear(3);
  const proto::Frame garbage = {std::byte{1}, std::byte{200}, std::byte{0}};
  h.server.received(2, garbage);
  BOOST_TEST(h.link.closes(2) == 1);
  const auto parts = all_of<proto::Parted>(h.of(1));
  BOOST_TEST_REQUIRE(parts.size() == 2u);  // lobby and dev
  for (const auto& p : parts) {
    BOOST_TEST(p.nick == "bob");
    BOOST_TEST((p.reason == proto::PartReason::kLost));
  }
  BOOST_TEST(all_of<proto::Parted>(h.of(3)).size() == 1u);
  BOOST_TEST(h.server.stats().clients == 2u);
  // The others carry on, and the nick is free again.
  h.say(1, "still fine");
  BOOST_TEST(all_of<proto::RoomMessage>(h.of(3)).size() == 1u);
  h.hello(4, "bob");
  BOOST_TEST(is<proto::Welcome>(h.of(4).at(0)));
  h.say(2, "ghost");  // ignored
  BOOST_TEST(all_of<proto::RoomMessage>(h.of(3)).size() == 1u);
}

BOOST_AUTO_TEST_CASE(server_message_from_a_client_disconnects_it) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.clear(1);
  h.send(2, proto::RoomMessage{"lobby", "alice", "forged", 99, 0, false, false, 0});
  BOOST_TEST(h.link.closes(2) == 1);
  const auto m = h.of(1);
  BOOST_TEST_REQUIRE(m.size() == 1u);
  BOOST_TEST((std::get<proto::Parted>(m[0]).reason == proto::PartReason::kLost));
  // Also before its hello.
  h.connect(3);
  h.send(3, proto::Welcome{"x", "y"});
  BOOST_TEST(h.link.closes(3) == 1);
  BOOST_TEST(h.of(3).empty());
}

BOOST_AUTO_TEST_CASE(died_client_parts_as_lost) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.clear(1);
  h.server.disconnected(2, Gone::kDied, "");
  BOOST_TEST(h.link.closes(2) == 1);
  const auto m = h.of(1);
  BOOST_TEST_REQUIRE(m.size() == 1u);
  const auto& p = std::get<proto::Parted>(m[0]);
  BOOST_TEST(p.nick == "bob");
  BOOST_TEST((p.reason == proto::PartReason::kLost));
  BOOST_TEST(p.seq == 3u);
  h.server.disconnected(2, Gone::kDied, "");  // already gone: nothing more
  BOOST_TEST(h.link.closes(2) == 1);
  BOOST_TEST(h.of(1).size() == 1u);
  // One that never said hello leaves no trace.
  h.connect(3);
  h.server.disconnected(3, Gone::kMalformed, "bad bytes in its ring");
  BOOST_TEST(h.link.closes(3) == 1);
  BOOST_TEST(h.of(1).size() == 1u);
}

BOOST_AUTO_TEST_CASE(quit_parts_with_reason_quit_and_closes) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.clear(1);
  h.send(2, proto::Quit{"bye"});
  const auto p = std::get<proto::Parted>(h.of(1).at(0));
  BOOST_TEST((p.reason == proto::PartReason::kQuit));
  BOOST_TEST((std::get<proto::Parted>(h.of(2).back()).reason == proto::PartReason::kQuit));
  BOOST_TEST(h.link.closes(2) == 1);
  h.server.disconnected(2, Gone::kClosed, "");
  BOOST_TEST(h.link.closes(2) == 1);
  BOOST_TEST(h.of(1).size() == 1u);  // no second part
}

BOOST_AUTO_TEST_CASE(slow_client_is_evicted_and_others_get_everything) {
  ChatOptions o;
  o.client_queue_bytes = 16 << 10;
  Harness h(o);
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.hello(3, "carol");
  h.send(2, proto::Join{"dev"});
  h.send(1, proto::Join{"dev"});
  h.link.set_full(2);
  h.clear(2);
  const std::string text(1000, 'x');
  constexpr int kMessages = 40;
  for (int i = 0; i < kMessages; ++i) {
    h.say(1, std::to_string(i) + text);
    if (i == 5) BOOST_TEST(h.server.stats().queued_bytes > 5000u);
  }
  BOOST_TEST(h.link.closes(2) == 1);
  BOOST_TEST(h.of(2).empty());  // the link never had room
  BOOST_TEST(h.server.stats().evictions == 1u);
  BOOST_TEST(h.server.stats().clients == 2u);
  BOOST_TEST(h.server.stats().queued_bytes == 0u);
  for (ClientId id : {1u, 3u}) {
    const auto m = h.of(id);
    BOOST_TEST(all_of<proto::RoomMessage>(m).size() == static_cast<std::size_t>(kMessages));
    const auto parts = all_of<proto::Parted>(m);
    BOOST_TEST_REQUIRE(!parts.empty());
    BOOST_TEST(parts.back().nick == "bob");
    BOOST_TEST((parts.back().reason == proto::PartReason::kEvicted));
    BOOST_TEST(contiguous(seqs(m, "lobby")));
  }
  // alice was in dev with bob: she sees him evicted there too.
  BOOST_TEST(all_of<proto::Parted>(h.of(1)).size() == 2u);
  BOOST_TEST(contiguous(seqs(h.of(1), "dev")));
  // Late news for the evicted client changes nothing.
  h.server.writable(2);
  h.server.disconnected(2, Gone::kClosed, "");
  h.say(2, "anyone?");
  BOOST_TEST(h.link.closes(2) == 1);
  BOOST_TEST(all_of<proto::RoomMessage>(h.of(3)).size() == static_cast<std::size_t>(kMessages));
}

BOOST_AUTO_TEST_CASE(writable_resumes_delivery_in_order) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.clear(2);
  h.link.allow(2, 3);  // three more frames, then full
  for (int i = 0; i < 10; ++i) h.say(1, "m" + std::to_string(i));
  BOOST_TEST(h.of(2).size() == 3u);
  // After kFull the server waits for writable() instead of trying again with every frame.
  BOOST_TEST(h.link.fulls(2) == 1);
  h.server.writable(2);  // still full: nothing changes
  BOOST_TEST(h.of(2).size() == 3u);
  h.link.allow(2, 4);
  h.server.writable(2);
  BOOST_TEST(h.of(2).size() == 7u);
  h.say(1, "m10");  // queued behind the backlog, not ahead of it
  BOOST_TEST(h.of(2).size() == 7u);
  h.link.allow(2, -1);
  h.server.writable(2);
  const auto got = texts(h.of(2));
  BOOST_TEST_REQUIRE(got.size() == 11u);
  for (int i = 0; i <= 10; ++i) BOOST_TEST(got[i] == "m" + std::to_string(i));
  BOOST_TEST(contiguous(seqs(h.of(2), "lobby")));
  BOOST_TEST(h.server.stats().queued_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(gone_link_drops_frames_until_the_disconnect) {
  // The peer vanished but the transport has not reported it yet: frames for it are dropped,
  // nothing piles up, and the others carry on.
  ChatOptions o;
  o.client_queue_bytes = 16 << 10;
  Harness h(o);
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.link.set_gone(2);
  for (int i = 0; i < 40; ++i) h.say(1, std::to_string(i) + std::string(1000, 'x'));
  BOOST_TEST(h.server.stats().queued_bytes == 0u);
  BOOST_TEST(h.server.stats().evictions == 0u);
  BOOST_TEST(h.link.closes(2) == 0);
  BOOST_TEST(all_of<proto::RoomMessage>(h.of(1)).size() == 40u);
  h.server.disconnected(2, Gone::kDied, "");
  BOOST_TEST(h.link.closes(2) == 1);
  const auto p = std::get<proto::Parted>(h.of(1).back());
  BOOST_TEST((p.reason == proto::PartReason::kLost));
}

BOOST_AUTO_TEST_CASE(goodbye_waits_for_a_full_link) {
  // A refused client whose link is full gets its error once there is room, then the close.
  Harness h;
  h.hello(1, "alice");
  h.link.set_full(2);
  h.hello(2, "alice");
  BOOST_TEST(h.link.closes(2) == 0);
  h.link.allow(2, -1);
  h.server.writable(2);
  BOOST_TEST(error_codes(h.of(2)) == std::vector<std::string>{"nick_in_use"});
  BOOST_TEST(h.link.closes(2) == 1);
}

BOOST_AUTO_TEST_CASE(shutdown_says_goodbye_to_everyone) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.connect(3);  // no hello yet
  h.hello(4, "slow");
  h.link.set_full(4);
  h.server.shutdown();
  for (ClientId id : {1u, 2u, 3u}) {
    const auto m = h.of(id);
    BOOST_TEST_REQUIRE(!m.empty());
    BOOST_TEST(
        (std::get<proto::Disconnected>(m.back()).reason == proto::DisconnectReason::kShutdown));
    BOOST_TEST(h.link.closes(id) == 1);
  }
  BOOST_TEST(h.link.closes(4) == 1);  // closed even though the goodbye did not fit
  BOOST_TEST(all_of<proto::Disconnected>(h.of(4)).empty());
  BOOST_TEST(h.server.stats().clients == 0u);
  BOOST_TEST(h.server.stats().rooms == 0u);
  // Nobody gets in afterwards.
  h.connect(5);
  BOOST_TEST(h.link.closes(5) == 1);
  h.send(5, proto::Hello{"late", "lobby"});
  BOOST_TEST(h.of(5).empty());
}

// `msgs` encoded with their timestamps zeroed, for comparing two runs.
std::vector<proto::Frame> timeless(std::vector<Message> msgs) {
  std::vector<proto::Frame> out;
  for (auto& m : msgs) {
    std::visit(
        [](auto& v) {
          if constexpr (requires { v.time_ms; }) v.time_ms = 0;
        },
        m);
    out.push_back(proto::encode(m));
  }
  return out;
}

BOOST_AUTO_TEST_CASE(a_batch_of_frames_acts_like_the_frames_one_by_one) {
  // chatd hands ChatServer up to 32 frames at once and flushes after the last. The smallest
  // client_queue_bytes chatd accepts is 64 KiB, and 19 long messages make more than that for
  // every member before the flush: only the client whose link is full may be evicted.
  ChatOptions o;
  o.client_queue_bytes = 64 << 10;
  std::vector<std::pair<ClientId, proto::Frame>> script = {
      {1, proto::encode(proto::Hello{"alice", "lobby"})},
      {2, proto::encode(proto::Hello{"bob", "lobby"})},
      {4, proto::encode(proto::Hello{"slow", "lobby"})},
      {1, proto::encode(proto::Say{"lobby", "hi", false})},
      {3, proto::Frame{std::byte{1}, std::byte{2}}},  // garbage: 3 is dropped
      {2, proto::encode(proto::Say{"lobby", "yo", true})},
      {1, proto::encode(proto::Join{"dev"})},
      {3, proto::encode(proto::Hello{"carol", "lobby"})},  // ignored: 3 is gone
      {2, proto::encode(proto::NickChange{"robert"})},
      {1, proto::encode(proto::Say{"dev", "in dev", false})},
      {2, proto::encode(proto::PrivateSend{"alice", "psst"})},
  };
  for (int i = 0; i < 19; ++i) {
    script.emplace_back(1, proto::encode(proto::Say{"lobby", std::string(4000, 'a' + i), false}));
  }
  script.emplace_back(2, proto::encode(proto::Sync{5}));
  script.emplace_back(1, proto::encode(proto::Quit{"bye"}));
  BOOST_TEST_REQUIRE(script.size() <= 32u);
  const auto run = [&](bool batched) {
    auto h = std::make_unique<Harness>(o);
    for (ClientId id : {1u, 2u, 3u, 4u}) h->connect(id);
    h->link.allow(4, 3);  // welcome, join, bob's join: then full
    if (batched) {
      std::vector<ChatServer::Received> frames;
      for (const auto& [id, f] : script) frames.push_back({id, f});
      h->server.received(frames);
    } else {
      for (const auto& [id, f] : script) h->server.received(id, f);
    }
    return h;
  };
  const auto one = run(false), batch = run(true);
  for (ClientId id : {1u, 2u, 3u, 4u}) {
    BOOST_TEST((timeless(one->of(id)) == timeless(batch->of(id))), "client " << id);
    BOOST_TEST(one->link.closes(id) == batch->link.closes(id), "client " << id);
  }
  // And what happened is what the script says.
  BOOST_TEST(batch->link.closes(2) == 0);
  BOOST_TEST(batch->link.closes(3) == 1);
  BOOST_TEST(batch->link.closes(4) == 1);
  BOOST_TEST(batch->server.stats().evictions == 1u);
  const auto bob = batch->of(2);
  BOOST_TEST(all_of<proto::RoomMessage>(bob).size() == 21u);
  BOOST_TEST_REQUIRE(bob.size() >= 2u);
  BOOST_TEST(std::get<proto::SyncAck>(bob[bob.size() - 2]).token == 5u);
  BOOST_TEST((std::get<proto::Parted>(bob.back()).reason == proto::PartReason::kQuit));
  BOOST_TEST(contiguous(seqs(bob, "lobby")));
}

// ---- several threads at once ----

// Every member saw the same event for `room` under each seq, and while it was in the room
// (from its own join to its own part) saw every seq, in order.
void check_room_consistency(const Harness& h, const std::vector<ClientId>& members,
                            const std::string& room) {
  std::map<std::uint64_t, std::string> by_seq;
  for (ClientId id : members) {
    std::string self;  // the member's nick as it changes
    bool new_stay = true;
    std::uint64_t last = 0;
    std::string r;
    std::uint64_t seq;
    for (const auto& m : h.of(id)) {
      if (const auto* w = std::get_if<proto::Welcome>(&m)) self = w->nick;
      const bool own_part =
          std::holds_alternative<proto::Parted>(m) && std::get<proto::Parted>(m).nick == self;
      if (const auto* n = std::get_if<proto::NickChanged>(&m); n && n->old_nick == self) {
        self = n->new_nick;  // announced once per room: only the first one renames
      }
      if (!room_event(m, r, seq) || r != room) continue;
      const auto [it, fresh] = by_seq.emplace(seq, describe(m));
      if (!fresh && it->second != describe(m)) {
        BOOST_ERROR("client " << id << " saw " << room << " seq " << seq << " as '" << describe(m)
                              << "', another as '" << it->second << "'");
        return;
      }
      if (!new_stay && seq != last + 1) {
        BOOST_ERROR("client " << id << " saw " << room << " seq " << seq << " after " << last);
        return;
      }
      last = seq;
      new_stay = false;
      if (own_part) new_stay = true;
    }
  }
  BOOST_TEST(!by_seq.empty());
}

BOOST_AUTO_TEST_CASE(concurrent_senders_get_one_contiguous_order) {
  Harness h;
  constexpr int kThreads = 4, kClientsPerThread = 2, kMessages = 300;
  std::vector<ClientId> ids;
  for (ClientId id = 1; id <= kThreads * kClientsPerThread; ++id) {
    h.hello(id, "c" + std::to_string(id));
    ids.push_back(id);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kMessages; ++i) {
        for (int c = 0; c < kClientsPerThread; ++c) {
          const ClientId id = static_cast<ClientId>(t * kClientsPerThread + c + 1);
          h.say(id, "c" + std::to_string(id) + "-" + std::to_string(i));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<std::string> reference;
  for (ClientId id : ids) {
    const auto got = all_of<proto::RoomMessage>(h.of(id));
    BOOST_TEST_REQUIRE(got.size() ==
                       static_cast<std::size_t>(kThreads * kClientsPerThread * kMessages));
    std::vector<std::string> order;
    std::map<std::string, int> next;  // per sender: the next message number expected
    for (std::size_t i = 0; i < got.size(); ++i) {
      BOOST_TEST_REQUIRE(got[i].seq == ids.size() + 1 + i);
      order.push_back(got[i].text);
      const std::string sender = got[i].text.substr(0, got[i].text.find('-'));
      BOOST_TEST_REQUIRE(got[i].text == sender + "-" + std::to_string(next[sender]++));
      BOOST_TEST_REQUIRE(got[i].from == sender);
    }
    if (reference.empty()) {
      reference = order;
    } else {
      BOOST_TEST_REQUIRE((order == reference), "client " << id << " saw another order");
    }
  }
  check_room_consistency(h, ids, "lobby");
  BOOST_TEST(h.server.stats().messages ==
             static_cast<std::uint64_t>(kThreads * kClientsPerThread * kMessages));
}

BOOST_AUTO_TEST_CASE(concurrent_churn_keeps_rooms_consistent) {
  // Threads send in two rooms, join and leave one of them, rename themselves, and one client
  // keeps running out of room and being made writable again.
  Harness h;
  constexpr int kThreads = 4, kRounds = 150;
  const ClientId anchor = 100, slow = 101;
  h.hello(anchor, "anchor");  // keeps dev alive, so its seq never restarts
  h.send(anchor, proto::Join{"dev"});
  h.hello(slow, "slow");
  h.send(slow, proto::Join{"dev"});
  std::vector<ClientId> workers;
  for (int t = 0; t < kThreads; ++t) {
    const ClientId id = static_cast<ClientId>(t + 1);
    h.hello(id, "w" + std::to_string(t) + "a");
    workers.push_back(id);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const ClientId id = static_cast<ClientId>(t + 1);
      bool in_dev = false;
      for (int i = 0; i < kRounds; ++i) {
        h.say(id, "w" + std::to_string(t) + " " + std::to_string(i));
        if (i % 7 == 0) {
          h.send(id, in_dev ? Message(proto::Part{"dev"}) : Message(proto::Join{"dev"}));
          in_dev = !in_dev;
        }
        if (in_dev) h.say(id, "dev " + std::to_string(i), "dev");
        if (i % 25 == 0) {
          h.send(id, proto::NickChange{"w" + std::to_string(t) + (i % 50 == 0 ? "b" : "a")});
        }
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < kRounds; ++i) {
      h.link.allow(slow, i % 3);
      h.server.writable(slow);
      h.say(slow, "slow " + std::to_string(i), i % 2 ? "dev" : "lobby");
      std::this_thread::yield();
    }
  });
  for (auto& t : threads) t.join();
  h.link.allow(slow, -1);
  h.server.writable(slow);
  BOOST_TEST(h.link.closes(slow) == 0);  // its backlog stayed far below the limit

  std::vector<ClientId> everyone = workers;
  everyone.push_back(anchor);
  everyone.push_back(slow);
  check_room_consistency(h, everyone, "lobby");
  check_room_consistency(h, everyone, "dev");
  // The ones who stayed in a room all along saw exactly the same events.
  const auto events = [&](ClientId id, const std::string& room) {
    std::vector<std::string> out;
    std::string r;
    std::uint64_t seq;
    for (const auto& m : h.of(id)) {
      if (room_event(m, r, seq) && r == room) out.push_back(std::to_string(seq) + describe(m));
    }
    return out;
  };
  // Everyone joined lobby after anchor and never left: their views are the tail of anchor's.
  // In dev, slow (which never left either) joined right after anchor.
  const auto is_tail = [](const std::vector<std::string>& part,
                          const std::vector<std::string>& whole) {
    return part.size() <= whole.size() &&
           std::equal(part.begin(), part.end(), whole.end() - static_cast<long>(part.size()));
  };
  const auto lobby = events(anchor, "lobby");
  const auto dev = events(anchor, "dev");
  BOOST_TEST(lobby.size() > static_cast<std::size_t>(kThreads * kRounds));
  for (ClientId id : everyone) {
    BOOST_TEST(is_tail(events(id, "lobby"), lobby), "client " << id);
  }
  BOOST_TEST(is_tail(events(slow, "dev"), dev));
  BOOST_TEST(events(slow, "dev").size() + 1 == dev.size());
}

// Batches handled into a Pending send nothing until deliver(); then every member has every
// message of every batch, in order (chatd holds deliveries back while a worker is busy).
BOOST_AUTO_TEST_CASE(pending_deliveries_go_out_on_deliver_in_order) {
  Harness h;
  h.hello(1, "alice");
  h.hello(2, "bob");
  h.clear(1);
  h.clear(2);
  std::vector<proto::Frame> frames;
  for (int i = 0; i < 3; ++i) {
    frames.push_back(proto::encode(proto::Say{"lobby", "m" + std::to_string(i), false}));
  }
  std::vector<ChatServer::Received> batch;
  for (const auto& f : frames) batch.push_back({1, f});
  ChatServer::Pending pending;
  h.server.received(batch, pending);
  BOOST_TEST(!pending.empty());
  BOOST_TEST(h.of(1).empty());
  BOOST_TEST(h.of(2).empty());
  const proto::Frame last = proto::encode(proto::Say{"lobby", "m3", false});
  const ChatServer::Received more[] = {{2, last}};
  h.server.received(more, pending);
  BOOST_TEST(h.of(2).empty());
  h.server.deliver(pending);
  BOOST_TEST(pending.empty());
  for (ClientId id : {1, 2}) {
    std::vector<std::string> texts;
    for (const auto& m : all_of<proto::RoomMessage>(h.of(id))) texts.push_back(m.text);
    BOOST_TEST(texts == (std::vector<std::string>{"m0", "m1", "m2", "m3"}), "client " << id);
  }
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat::server

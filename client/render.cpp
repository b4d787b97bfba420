#include "client/render.hpp"

#include <time.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "common/access.hpp"
#include "common/time.hpp"
#include "common/validate.hpp"

namespace chat::client {
namespace proto = protocol;
using nlohmann::json;

namespace {

// The login name of `uid`, looked up once per account: events arrive by the thousand, the
// passwd database is a file (or a daemon) away.
std::string user_name(std::uint32_t uid) {
  static std::mutex mutex;
  static std::unordered_map<std::uint32_t, std::string> names;
  std::lock_guard lock(mutex);
  auto it = names.find(uid);
  if (it == names.end()) it = names.emplace(uid, account_name(static_cast<uid_t>(uid))).first;
  return it->second;
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string local_clock(std::int64_t unix_ms) {
  const time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm local{};
  localtime_r(&secs, &local);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &local);
  return buf;
}

std::string dim(const std::string& s, const RenderContext& ctx) {
  return ctx.color ? "\x1b[2m" + s + "\x1b[0m" : s;
}

std::string stamp(std::int64_t ms) {
  return "[" + local_clock(ms) + "] ";
}

}  // namespace

std::string colored_nick(const std::string& nick, const RenderContext& ctx) {
  const std::string clean = sanitize_for_terminal(nick);
  if (!ctx.color) return clean;
  unsigned h = 0;
  for (unsigned char c : fold_name(nick)) h = h * 31 + c;
  static constexpr const char* kColors[] = {"31", "32", "33", "34", "35", "36"};
  return std::string("\x1b[") + kColors[h % 6] + "m" + clean + "\x1b[0m";
}

std::string to_jsonl(const proto::Message& m, const RenderContext& ctx) {
  return std::visit(
      [&](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, proto::Welcome>) {
          return dump({{"event", "welcome"},
                       {"nick", v.nick},
                       {"room", v.room},
                       {"transport", ctx.transport},
                       {"instance", ctx.instance}});
        } else if constexpr (std::is_same_v<T, proto::RoomMessage>) {
          return dump({{"event", "message"},
                       {"room", v.room},
                       {"from", v.from},
                       {"user", user_name(v.uid)},
                       {"text", v.text},
                       {"seq", v.seq},
                       {"time", format_rfc3339(v.time_ms)},
                       {"action", v.action},
                       {"history", v.history}});
        } else if constexpr (std::is_same_v<T, proto::PrivateMessage>) {
          return dump({{"event", "private"},
                       {"from", v.from},
                       {"user", user_name(v.uid)},
                       {"to", v.to},
                       {"text", v.text},
                       {"time", format_rfc3339(v.time_ms)}});
        } else if constexpr (std::is_same_v<T, proto::Joined>) {
          return dump({{"event", "join"},
                       {"room", v.room},
                       {"nick", v.nick},
                       {"user", user_name(v.uid)},
                       {"seq", v.seq},
                       {"time", format_rfc3339(v.time_ms)}});
        } else if constexpr (std::is_same_v<T, proto::Parted>) {
          return dump({{"event", "part"},
                       {"room", v.room},
                       {"nick", v.nick},
                       {"user", user_name(v.uid)},
                       {"seq", v.seq},
                       {"time", format_rfc3339(v.time_ms)},
                       {"reason", std::string(proto::to_string(v.reason))}});
        } else if constexpr (std::is_same_v<T, proto::NickChanged>) {
          json j = {{"event", "nick"},
                    {"old", v.old_nick},
                    {"new", v.new_nick},
                    {"time", format_rfc3339(v.time_ms)}};
          if (!v.room.empty()) {
            j["room"] = v.room;
            j["seq"] = v.seq;
          }
          return dump(j);
        } else if constexpr (std::is_same_v<T, proto::WhoReply>) {
          return dump({{"event", "who"}, {"room", v.room}, {"nicks", v.nicks}});
        } else if constexpr (std::is_same_v<T, proto::WhoisReply>) {
          return dump({{"event", "whois"},
                       {"nick", v.nick},
                       {"user", user_name(v.uid)},
                       {"rooms", v.rooms},
                       {"away", nullptr},
                       {"node", nullptr}});
        } else if constexpr (std::is_same_v<T, proto::RoomsReply>) {
          json rooms = json::array();
          for (const auto& r : v.rooms) rooms.push_back({{"name", r.name}, {"members", r.members}});
          return dump({{"event", "rooms"}, {"rooms", rooms}});
        } else if constexpr (std::is_same_v<T, proto::Notice>) {
          return dump({{"event", "notice"}, {"text", v.text}});
        } else if constexpr (std::is_same_v<T, proto::Error>) {
          return dump({{"event", "error"}, {"code", v.code}, {"text", v.text}});
        } else if constexpr (std::is_same_v<T, proto::Disconnected>) {
          return dump(
              {{"event", "disconnected"}, {"reason", std::string(proto::to_string(v.reason))}});
        } else {
          return {};
        }
      },
      m);
}

std::string to_text(const proto::Message& m, const RenderContext& ctx) {
  const auto clean = [](const std::string& s) { return sanitize_for_terminal(s); };
  return std::visit(
      [&](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, proto::Welcome>) {
          return "*** welcome, " + clean(v.nick) + ": you are in #" + clean(v.room) + " (" +
                 ctx.transport + ", instance " + ctx.instance + "; /help for commands)";
        } else if constexpr (std::is_same_v<T, proto::RoomMessage>) {
          const std::string where = "#" + clean(v.room) + " ";
          const std::string hist = v.history ? dim("(history) ", ctx) : "";
          if (v.action) {
            return stamp(v.time_ms) + hist + where + "* " + colored_nick(v.from, ctx) + " " +
                   clean(v.text);
          }
          return stamp(v.time_ms) + hist + where + "<" + colored_nick(v.from, ctx) + "> " +
                 clean(v.text);
        } else if constexpr (std::is_same_v<T, proto::PrivateMessage>) {
          return stamp(v.time_ms) + "[private] <" + colored_nick(v.from, ctx) + " -> " +
                 colored_nick(v.to, ctx) + "> " + clean(v.text);
        } else if constexpr (std::is_same_v<T, proto::Joined>) {
          return stamp(v.time_ms) + dim("-- " + clean(v.nick) + " joined #" + clean(v.room), ctx);
        } else if constexpr (std::is_same_v<T, proto::Parted>) {
          return stamp(v.time_ms) + dim("-- " + clean(v.nick) + " left #" + clean(v.room) + " (" +
                                            std::string(proto::to_string(v.reason)) + ")",
                                        ctx);
        } else if constexpr (std::is_same_v<T, proto::NickChanged>) {
          return stamp(v.time_ms) +
                 dim("-- " + clean(v.old_nick) + " is now known as " + clean(v.new_nick) +
                         (v.room.empty() ? "" : " (#" + clean(v.room) + ")"),
                     ctx);
        } else if constexpr (std::is_same_v<T, proto::WhoReply>) {
          std::string line = "*** #" + clean(v.room) + ":";
          for (const auto& n : v.nicks) line += " " + colored_nick(n, ctx);
          return line;
        } else if constexpr (std::is_same_v<T, proto::WhoisReply>) {
          std::string line = "*** " + colored_nick(v.nick, ctx) + " is " + clean(user_name(v.uid));
          if (!v.rooms.empty()) line += ", in";
          for (const auto& r : v.rooms) line += " #" + clean(r);
          return line;
        } else if constexpr (std::is_same_v<T, proto::RoomsReply>) {
          std::string line = "*** rooms:";
          for (const auto& r : v.rooms) {
            line += " #" + clean(r.name) + " (" + std::to_string(r.members) + ")";
          }
          return line;
        } else if constexpr (std::is_same_v<T, proto::Notice>) {
          return "*** " + clean(v.text);
        } else if constexpr (std::is_same_v<T, proto::Error>) {
          return "*** error (" + clean(v.code) + "): " + clean(v.text);
        } else if constexpr (std::is_same_v<T, proto::Disconnected>) {
          return "*** disconnected: " + std::string(proto::to_string(v.reason));
        } else {
          return {};
        }
      },
      m);
}

std::optional<proto::Message> ListAssembler::feed(proto::Message&& m) {
  if (auto* w = std::get_if<proto::WhoReply>(&m)) {
    if (who_.nicks.empty()) who_.room = w->room;
    who_.nicks.insert(who_.nicks.end(), w->nicks.begin(), w->nicks.end());
    if (w->more) return std::nullopt;
    proto::WhoReply done = std::move(who_);
    who_ = {};
    return done;
  }
  if (auto* r = std::get_if<proto::RoomsReply>(&m)) {
    rooms_.rooms.insert(rooms_.rooms.end(), r->rooms.begin(), r->rooms.end());
    if (r->more) return std::nullopt;
    proto::RoomsReply done = std::move(rooms_);
    rooms_ = {};
    return done;
  }
  return std::move(m);
}

ConnectionLoss explain_loss(bool shutdown_notice, bool server_alive) {
  if (shutdown_notice) return {proto::DisconnectReason::kShutdown, "the server shut down"};
  if (!server_alive) return {proto::DisconnectReason::kServerGone, "the server died"};
  return {proto::DisconnectReason::kEvicted,
          "the server dropped this client (too slow, or it broke the protocol)"};
}

}  // namespace chat::client

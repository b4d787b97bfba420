#include "server/status.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <sstream>

#include "common/error.hpp"
#include "common/instance.hpp"

namespace chat::server {
namespace {

using nlohmann::json;

// How long one status reader may take to read the document before it is cut short; chatd's
// main thread, which also watches for SIGTERM, waits this long at most.
constexpr auto kSendTimeout = std::chrono::milliseconds(200);
// How long `chatd --status` waits for the whole answer.
constexpr auto kAnswerTimeout = std::chrono::seconds(3);

sockaddr_un address_of(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string s = path.string();
  if (s.size() >= sizeof addr.sun_path) {
    throw std::system_error(ENAMETOOLONG, std::generic_category(), "status socket " + s);
  }
  std::memcpy(addr.sun_path, s.c_str(), s.size() + 1);
  return addr;
}

void send_all(int fd, std::string_view data, Deadline deadline) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      if (retry_eintr([&] { return ::poll(&p, 1, poll_timeout_ms(deadline)); }) > 0) continue;
    }
    return;  // the reader went away or is too slow: it gets what it got
  }
}

std::uint64_t number(const json& j, const char* key) {
  return j.value(key, std::uint64_t{0});
}

std::string bytes(std::uint64_t n) {
  if (n < 10 * 1024) return std::to_string(n) + " B";
  if (n < 10 * 1024 * 1024) return std::to_string(n / 1024) + " KiB";
  return std::to_string(n / (1024 * 1024)) + " MiB";
}

std::string duration(double seconds) {
  auto s = static_cast<long long>(seconds);
  std::string out;
  if (s >= 86400) out += std::to_string(s / 86400) + "d ", s %= 86400;
  if (s >= 3600 || !out.empty()) out += std::to_string(s / 3600) + "h ", s %= 3600;
  if (s >= 60 || !out.empty()) out += std::to_string(s / 60) + "m ";
  return out + std::to_string(s % 60) + "s";
}

// Left-aligned columns, two spaces apart.
std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line = " ";
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += " " + row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 1, ' ');
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace

StatusListener::StatusListener(const std::filesystem::path& dir)
    : path_(dir / kStatusSocketName),
      fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) {
  if (!fd_) throw_system_error("socket", path_.string());
  const sockaddr_un addr = address_of(path_);
  if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw_system_error("bind", path_.string());
  }
  // bind() applied the umask; the directory is 0700, and the socket is made 0600 as well.
  if (::chmod(path_.c_str(), 0600) != 0 || ::listen(fd_.get(), 16) != 0) {
    const int e = errno;
    ::unlink(path_.c_str());
    throw_system_error("listen", path_.string(), e);
  }
}

StatusListener::~StatusListener() {
  fd_.reset();
  ::unlink(path_.c_str());
}

void StatusListener::serve(const std::string& document) {
  for (;;) {
    UniqueFd conn(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) return;  // EAGAIN: nobody else waits (or a transient error: they retry)
    send_all(conn.get(), document, deadline_after(kSendTimeout));
  }
}

json status_document(const DaemonFacts& f, const ChatStats& st) {
  json rooms = json::array();
  for (const auto& r : st.room_list) {
    rooms.push_back(
        {{"name", r.name}, {"members", r.members}, {"seq", r.seq}, {"history", r.history}});
  }
  json clients = json::array();
  for (const auto& c : st.client_list) {
    clients.push_back({{"id", c.id},
                       {"pid", c.pid},
                       {"nick", c.nick},
                       {"rooms", c.rooms},
                       {"queued_frames", c.queued_frames},
                       {"queued_bytes", c.queued_bytes},
                       {"blocked", c.blocked},
                       {"transport_bytes", c.transport_bytes}});
  }
  const double uptime = std::chrono::duration<double>(Clock::now() - f.started).count();
  return {{"instance", f.instance},
          {"transport", f.transport},
          {"pid", f.pid},
          {"uptime_seconds", uptime},
          {"workers", f.workers},
          {"pending_tasks", f.pending_tasks},
          {"max_clients", f.max_clients},
          {"history", f.history},
          {"client_queue_bytes", f.client_queue_bytes},
          {"clients", st.clients},
          {"rooms", st.rooms},
          {"messages", st.messages},
          {"evictions", st.evictions},
          {"queued_bytes", st.queued_bytes},
          {"transport_bytes", st.transport_bytes},
          {"room_list", rooms},
          {"client_list", clients}};
}

std::string format_status(const json& s) {
  std::ostringstream out;
  out << "chatd pid " << number(s, "pid") << ", instance " << s.value("instance", "?")
      << ", transport " << s.value("transport", "?") << ", up "
      << duration(s.value("uptime_seconds", 0.0)) << "\n"
      << "clients " << number(s, "clients") << "/" << number(s, "max_clients") << ", rooms "
      << number(s, "rooms") << ", messages " << number(s, "messages") << ", evictions "
      << number(s, "evictions") << "\n"
      << "queued for clients " << bytes(number(s, "queued_bytes")) << " (evicted past "
      << bytes(number(s, "client_queue_bytes")) << " each), " << bytes(number(s, "transport_bytes"))
      << " in transport buffers\n"
      << number(s, "workers") << " workers, " << number(s, "pending_tasks") << " tasks waiting\n";
  const json rooms = s.value("room_list", json::array());
  if (!rooms.empty()) {
    std::vector<std::vector<std::string>> rows = {{"ROOM", "MEMBERS", "SEQ", "HISTORY"}};
    for (const auto& r : rooms) {
      rows.push_back({r.value("name", "?"), std::to_string(number(r, "members")),
                      std::to_string(number(r, "seq")), std::to_string(number(r, "history"))});
    }
    out << "\n" << table(rows);
  }
  const json clients = s.value("client_list", json::array());
  if (!clients.empty()) {
    std::vector<std::vector<std::string>> rows = {
        {"ID", "PID", "NICK", "IN TRANSPORT", "QUEUED", "FRAMES", "BLOCKED", "ROOMS"}};
    for (const auto& c : clients) {
      std::string in;
      for (const auto& r : c.value("rooms", json::array()))
        in += (in.empty() ? "" : ",") + r.get<std::string>();
      const std::string nick = c.value("nick", "");
      rows.push_back({std::to_string(number(c, "id")), std::to_string(number(c, "pid")),
                      nick.empty() ? "(hello pending)" : nick, bytes(number(c, "transport_bytes")),
                      bytes(number(c, "queued_bytes")), std::to_string(number(c, "queued_frames")),
                      c.value("blocked", false) ? "yes" : "no", in.empty() ? "-" : in});
    }
    out << "\n" << table(rows);
  }
  return out.str();
}

int run_status(const std::filesystem::path& base, const std::string& instance, bool as_json) {
  const auto dir = base / instance;
  const auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "chatd: %s\n", why.c_str());
    return 1;
  };
  try {
    if (!find_live_instance(base, instance)) {
      return fail("no chatd is running for instance '" + instance + "' (looked in " + dir.string() +
                  ")");
    }
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail(std::string("socket: ") + std::strerror(errno));
  const auto path = dir / kStatusSocketName;
  sockaddr_un addr{};
  try {
    addr = address_of(path);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  if (retry_eintr([&] {
        return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
      }) != 0) {
    return fail("cannot reach the status socket " + path.string() + ": " + std::strerror(errno));
  }
  std::string answer;
  const Deadline deadline = deadline_after(kAnswerTimeout);
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    if (retry_eintr([&] { return ::poll(&p, 1, poll_timeout_ms(deadline)); }) <= 0) {
      return fail("the server did not answer on " + path.string());
    }
    char buf[16 << 10];
    const ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
    if (n < 0) return fail("reading " + path.string() + ": " + std::strerror(errno));
    if (n == 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
  }
  const json status = json::parse(answer, nullptr, false);
  if (status.is_discarded() || !status.is_object()) {
    return fail("the server's answer on " + path.string() + " is not a status document");
  }
  const std::string text = as_json ? status.dump() + "\n" : format_status(status);
  std::fputs(text.c_str(), stdout);
  return 0;
}

}  // namespace chat::server

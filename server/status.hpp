// chatd's status view, `chatd --status`.
//
// A running chatd listens on `status.sock` (AF_UNIX SOCK_STREAM, 0600, in its 0700 runtime
// dir) from its main thread. Whoever connects gets one JSON document describing the server at
// that moment, then end of file; the server reads nothing from the connection. Chosen over a
// periodically rewritten status.json: nothing is written while nobody asks, the answer is
// never stale, and a server killed with SIGKILL leaves only a socket file, which the next
// chatd or `chatd --cleanup` removes with the rest of the directory.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "common/time.hpp"
#include "common/unique_fd.hpp"
#include "server/chat_server.hpp"

namespace chat::server {

inline constexpr char kStatusSocketName[] = "status.sock";

// The listening end. Not thread-safe: owned by chatd's main thread.
class StatusListener {
 public:
  // Listens on DIR/status.sock, mode 0600 whatever the umask. Throws std::system_error.
  explicit StatusListener(const std::filesystem::path& dir);
  // Closes the socket and removes its file.
  ~StatusListener();
  StatusListener(const StatusListener&) = delete;
  StatusListener& operator=(const StatusListener&) = delete;

  // Readable (POLLIN) when someone waits to be answered.
  int fd() const { return fd_.get(); }

  // Answers every waiting connection with `document` and closes it. Never blocks for long:
  // a reader that does not take the document within a short time gets it cut short.
  void serve(const std::string& document);

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
};

// What chatd reports besides ChatServer's own statistics.
struct DaemonFacts {
  std::string instance;
  std::string transport;
  pid_t pid = 0;
  Deadline started{};  // steady-clock time the server started serving
  std::size_t workers = 0;
  std::size_t pending_tasks = 0;  // batches of events waiting for a worker
  std::size_t max_clients = 0;
  std::size_t history = 0;
  std::size_t client_queue_bytes = 0;
};

// The status document: every field of `facts` and `stats`, with per-room and per-client lists.
nlohmann::json status_document(const DaemonFacts& facts, const ChatStats& stats);

// A status document as a person reads it: a summary, then a table of rooms and of clients.
std::string format_status(const nlohmann::json& status);

// `chatd --status`: asks the running server of BASE/INSTANCE and prints its answer to stdout,
// as format_status() or, with `json`, as the document on one line. Returns chatd's exit code:
// 0, or 1 (with a message on stderr) if no server runs there or it does not answer.
int run_status(const std::filesystem::path& base, const std::string& instance, bool json);

}  // namespace chat::server

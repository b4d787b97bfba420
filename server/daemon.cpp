#include "server/daemon.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>

#include "common/error.hpp"
#include "common/instance.hpp"
#include "common/protocol.hpp"
#include "server/chat_server.hpp"
#include "server/dispatcher.hpp"
#include "server/service.hpp"
#include "server/status.hpp"
#include "transport/factory.hpp"

namespace chat::server {
namespace {

// Removes whatever a dead server of this instance left: every backend's objects (the dead
// server may have used another transport) and every file in the directory.
std::vector<std::string> remove_leftovers(const InstanceDir& dir) {
  transport::CleanupOptions co;
  co.dir = dir.path();
  if (const auto stale = dir.stale_info()) {
    co.dead_server_pid = stale->pid;
    co.objects = stale->objects;
  }
  std::vector<std::string> removed;
  for (const auto& backend : transport::backends()) {
    for (auto& line : backend.cleanup(co)) removed.push_back(std::move(line));
  }
  for (auto& file : dir.remove_contents()) removed.push_back(std::move(file));
  return removed;
}

// Blocks SIGINT and SIGTERM and returns a signalfd for them.
UniqueFd termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throw_system_error("pthread_sigmask", "");
  UniqueFd fd(::signalfd(-1, &set, SFD_CLOEXEC));
  if (!fd) throw_system_error("signalfd", "SIGINT/SIGTERM");
  return fd;
}

InstanceDir acquire(const DaemonOptions& o) {
  return InstanceDir::acquire(resolve_runtime_base(o.runtime_dir), o.instance, o.access);
}

// What `chatd --status` reports besides ChatServer's statistics, as of now.
DaemonFacts facts_of(const DaemonOptions& o) {
  DaemonFacts facts;
  facts.instance = o.instance;
  facts.transport = o.transport;
  facts.pid = ::getpid();
  facts.started = Clock::now();
  facts.workers = o.workers;
  facts.max_clients = o.max_clients;
  facts.history = o.history;
  facts.client_queue_bytes = o.client_queue_bytes;
  return facts;
}

// The main thread's part while the server runs: waits for a termination signal on `signals`
// or for the dispatcher's I/O thread to give up, and answers `chatd --status` meanwhile.
// Returns the exit code.
int serve_until_stopped(int signals, DaemonFacts facts, const ChatServer& chat,
                        const Dispatcher& dispatcher, StatusListener& status,
                        const Logger& logger) {
  pollfd fds[3] = {
      {signals, POLLIN, 0}, {dispatcher.failed_fd(), POLLIN, 0}, {status.fd(), POLLIN, 0}};
  for (;;) {
    if (retry_eintr([&] { return ::poll(fds, 3, -1); }) <= 0) continue;
    if ((fds[0].revents | fds[1].revents) & POLLIN) break;
    if (fds[2].revents & POLLIN) {
      facts.pending_tasks = dispatcher.pending_tasks();
      status.serve(status_document(facts, chat.stats())
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                   "\n");
    }
  }
  if (!(fds[0].revents & POLLIN)) return kExitFailure;
  signalfd_siginfo si{};
  [[maybe_unused]] ssize_t n = ::read(signals, &si, sizeof si);
  logger.info(std::string("received ") + (si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM") +
              ", shutting down");
  return kExitOk;
}

}  // namespace

int run_daemon(const DaemonOptions& o, const Logger& logger) {
  UniqueFd signals = termination_signals();
  transport::prepare_process();
  const transport::Backend* backend = transport::find_backend(o.transport);
  if (backend == nullptr) {
    logger.error("unknown transport '" + o.transport + "'");
    return kExitUsage;
  }
  std::optional<InstanceDir> dir;
  try {
    dir.emplace(acquire(o));
  } catch (const InstanceBusy& e) {
    logger.error(e.what());
    return kExitBusy;
  }
  for (const auto& line : remove_leftovers(*dir)) {
    logger.info("removed leftover of a dead server: " + line);
  }

  transport::ListenOptions lo;
  lo.dir = dir->path();
  lo.instance = o.instance;
  lo.max_clients = o.max_clients;
  lo.logger = &logger;
  lo.access = o.access;
  std::unique_ptr<transport::ServerEndpoint> endpoint;
  std::optional<StatusListener> status;
  try {
    endpoint = backend->listen(lo);
    status.emplace(dir->path());
    InstanceInfo info;
    info.instance = o.instance;
    info.transport = o.transport;
    info.pid = ::getpid();
    info.protocol = protocol::kVersion;
    info.objects = endpoint->objects();
    dir->publish(info);
  } catch (...) {
    status.reset();
    endpoint.reset();
    remove_leftovers(*dir);
    dir->remove();
    throw;
  }
  service::notify_ready("serving instance '" + o.instance + "' over " + o.transport);

  EndpointLink link(*endpoint);
  ChatServer chat(link, logger,
                  {o.max_clients, o.history, o.client_queue_bytes,
                   o.access.kind() != AccessPolicy::Kind::kUser});
  Dispatcher dispatcher(*endpoint, chat, o.workers, logger);
  logger.info("serving instance '" + o.instance + "' over " + o.transport + " in " +
              dir->path().string() + " with " + std::to_string(o.workers) + " workers (pid " +
              std::to_string(::getpid()) + ")");
  const int code =
      serve_until_stopped(signals.get(), facts_of(o), chat, dispatcher, *status, logger);
  dispatcher.stop();  // what was polled is handled before the goodbyes of shutdown()
  chat.shutdown();
  service::notify_stopping("shutting down");
  status.reset();
  endpoint.reset();  // removes the transport's objects
  dir->remove();
  logger.info("shut down cleanly");
  return code;
}

int run_cleanup(const DaemonOptions& o, const Logger& logger) {
  const auto base = resolve_runtime_base(o.runtime_dir);
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(base / o.instance, ec))) {
    std::printf("nothing to clean up: %s does not exist\n", (base / o.instance).c_str());
    return kExitOk;
  }
  std::optional<InstanceDir> dir;
  try {
    dir.emplace(acquire(o));
  } catch (const InstanceBusy& e) {
    logger.error(std::string(e.what()) + "; not cleaning up a live instance");
    return kExitBusy;
  }
  const auto removed = remove_leftovers(*dir);
  for (const auto& line : removed) std::printf("removed %s\n", line.c_str());
  dir->remove();
  std::printf("removed %s\n", dir->path().c_str());
  return kExitOk;
}

}  // namespace chat::server

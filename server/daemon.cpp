#include "server/daemon.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "common/error.hpp"
#include "common/instance.hpp"
#include "common/protocol.hpp"
#include "server/chat_server.hpp"
#include "server/thread_pool.hpp"
#include "transport/factory.hpp"

namespace chat::server {
namespace {

constexpr std::size_t kTasksPerWorker = 256;  // batches of events, not single frames

// ChatServer's Link over a transport endpoint.
class EndpointLink final : public Link {
 public:
  explicit EndpointLink(transport::ServerEndpoint& endpoint) : endpoint_(endpoint) {}
  SendResult send(ClientId id, std::span<const std::byte> frame) override {
    return endpoint_.send(id, frame);
  }
  void close(ClientId id) override { endpoint_.close(id); }

 private:
  transport::ServerEndpoint& endpoint_;
};

void dispatch(ChatServer& chat, transport::ServerEvent& ev) {
  using Kind = transport::ServerEvent::Kind;
  switch (ev.kind) {
    case Kind::kConnected:
      chat.connected(ev.client, ev.pid);
      break;
    case Kind::kFrame:
      chat.received(ev.client, ev.frame);
      break;
    case Kind::kWritable:
      chat.writable(ev.client);
      break;
    case Kind::kDisconnected:
      chat.disconnected(ev.client, ev.gone, ev.detail);
      break;
  }
}

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
  return InstanceDir::acquire(resolve_runtime_base(o.runtime_dir), o.instance);
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
  std::unique_ptr<transport::ServerEndpoint> endpoint;
  try {
    endpoint = backend->listen(lo);
    InstanceInfo info;
    info.instance = o.instance;
    info.transport = o.transport;
    info.pid = ::getpid();
    info.protocol = protocol::kVersion;
    info.objects = endpoint->objects();
    dir->publish(info);
  } catch (...) {
    endpoint.reset();
    remove_leftovers(*dir);
    dir->remove();
    throw;
  }

  EndpointLink link(*endpoint);
  ChatServer chat(link, logger, {o.max_clients, o.history, o.client_queue_bytes});
  ThreadPool pool(o.workers, kTasksPerWorker);
  UniqueFd io_failed(::eventfd(0, EFD_CLOEXEC));
  if (!io_failed) throw_system_error("eventfd", "chatd");
  std::atomic<bool> stop{false};
  std::thread io([&] {
    std::vector<transport::ServerEvent> events;
    std::vector<std::vector<transport::ServerEvent>> batches(pool.size());
    try {
      while (!stop.load(std::memory_order_acquire)) {
        events.clear();
        endpoint->poll(events, deadline_after(std::chrono::seconds(1)));
        for (auto& ev : events) batches[ev.client % pool.size()].push_back(std::move(ev));
        for (std::size_t w = 0; w < batches.size(); ++w) {
          if (batches[w].empty()) continue;
          pool.submit(w, [&chat, batch = std::move(batches[w])]() mutable {
            for (auto& ev : batch) dispatch(chat, ev);
          });
          batches[w].clear();
        }
      }
    } catch (const std::exception& e) {
      logger.error(std::string("I/O thread failed: ") + e.what());
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(io_failed.get(), &one, sizeof one);
    }
  });

  logger.info("serving instance '" + o.instance + "' over " + o.transport + " in " +
              dir->path().string() + " with " + std::to_string(o.workers) + " workers (pid " +
              std::to_string(::getpid()) + ")");
  int code = kExitOk;
  pollfd fds[2] = {{signals.get(), POLLIN, 0}, {io_failed.get(), POLLIN, 0}};
  while (retry_eintr([&] { return ::poll(fds, 2, -1); }) <= 0) {
  }
  if (fds[0].revents & POLLIN) {
    signalfd_siginfo si{};
    [[maybe_unused]] ssize_t n = ::read(signals.get(), &si, sizeof si);
    logger.info(std::string("received ") + (si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM") +
                ", shutting down");
  } else {
    code = kExitFailure;
  }
  stop.store(true, std::memory_order_release);
  endpoint->wake();
  io.join();
  pool.stop();
  chat.shutdown();
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

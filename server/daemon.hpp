// The chatd process around ChatServer: the runtime dir, the transport endpoint, the
// dispatcher (I/O thread and workers, server/dispatcher.hpp), `--status` and signal-driven
// shutdown.
#pragma once

#include <cstddef>
#include <string>

#include "common/access.hpp"
#include "common/log.hpp"

namespace chat::server {

struct DaemonOptions {
  std::string transport = "cond";
  std::string instance = "default";
  std::string runtime_dir;  // empty: the default base
  std::size_t workers = 1;
  std::size_t history = 100;
  std::size_t max_clients = 256;
  std::size_t client_queue_bytes = 1 << 20;
  AccessPolicy access;  // who may connect (--access)
};

// Exit codes of chatd (DESIGN.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitBusy = 3;

// Serves the instance until SIGINT or SIGTERM; returns the exit code. Must be called from the
// main thread before any other thread is started.
int run_daemon(const DaemonOptions& options, const Logger& logger);

// `chatd --cleanup`: removes what a dead server of the instance left behind, printing a line
// per object to stdout. Returns the exit code (kExitBusy if a live server owns the instance).
int run_cleanup(const DaemonOptions& options, const Logger& logger);

}  // namespace chat::server

// chatd: parses options and hands over to run_daemon / run_cleanup.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <iostream>
#include <thread>

#include "common/config.hpp"
#include "common/error.hpp"
#include "common/instance.hpp"
#include "common/limits.hpp"
#include "common/validate.hpp"
#include "server/daemon.hpp"
#include "server/service.hpp"
#include "server/status.hpp"
#include "transport/factory.hpp"

namespace po = boost::program_options;
using chat::UsageError;

namespace {

constexpr char kVersion[] = "chatd (ipchat) " IPCHAT_VERSION;

struct Parsed {
  chat::server::DaemonOptions daemon;
  chat::LogLevel log_level = chat::LogLevel::kInfo;
  bool cleanup = false;
  bool status = false;
  bool json = false;
  bool help = false;
  bool version = false;
};

po::options_description configurable() {
  po::options_description d("Options (also as 'key = value' lines in --config)");
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  // clang-format off: one option per line reads better than what the formatter makes of it
  d.add_options()("transport", po::value<std::string>()->default_value("cond"),
                  ("IPC backend: " + chat::transport::backend_names()).c_str())(
      "instance", po::value<std::string>()->default_value("default"),
      "instance name; servers with different names run side by side")(
      "workers", po::value<long long>()->default_value(cores),
      "worker threads in the dispatch pool (default: number of cores)")(
      "history", po::value<long long>()->default_value(100),
      "room messages replayed to a member who joins")(
      "max-clients", po::value<long long>()->default_value(256),
      "clients at once; further hellos get a server_full error")(
      "client-queue-bytes", po::value<long long>()->default_value(1 << 20),
      "backlog the server keeps for one slow client before evicting it")(
      "access", po::value<std::string>()->default_value("user"),
      "who may connect: user (this account only), group:NAME (members of group NAME too) or "
      "all (every local account); the kernel tells the server who each client is")(
      "runtime-dir", po::value<std::string>()->default_value(""),
      "base directory (default $RUNTIME_DIRECTORY, which systemd sets for a service, else "
      "$XDG_RUNTIME_DIR/ipchat, else /tmp/ipchat-UID); the instance "
      "lives in DIR/INSTANCE")("log-level", po::value<std::string>()->default_value("info"),
                               "debug, info, warn or error");
  // clang-format on
  return d;
}

po::options_description command_line_only() {
  po::options_description d("Command-line only");
  // clang-format off: one option per line reads better than what the formatter makes of it
  d.add_options()("config", po::value<std::string>(),
                  "INI file of the options above; the command line overrides it")(
      "cleanup", "remove what a crashed server of this instance left behind, print it, and exit")(
      "status",
      "print the running server's clients, rooms, messages and per-client queue "
      "depths, and exit (it answers on status.sock in the runtime dir)")(
      "json", "with --status: print the status as one JSON object")(
      "help,h", "show this help and exit")("version", "show the version and exit");
  // clang-format on
  return d;
}

long long in_range(const po::variables_map& vm, const chat::OptionSources& src,
                   const std::string& key, long long lo, long long hi) {
  const long long v = vm[key].as<long long>();
  if (v < lo || v > hi) {
    throw UsageError(src.describe(key) + ": " + std::to_string(v) + " is out of range (" +
                     std::to_string(lo) + ".." + std::to_string(hi) + ")");
  }
  return v;
}

Parsed parse(int argc, char** argv) {
  const po::options_description conf = configurable();
  po::options_description all;
  all.add(conf).add(command_line_only());
  po::variables_map vm;
  chat::OptionSources src;
  try {
    const auto parsed = po::command_line_parser(argc, argv).options(all).run();
    src.from_command_line(parsed);
    po::store(parsed, vm);
  } catch (const po::error& e) {
    throw UsageError(chat::describe_option_error(e));
  }
  Parsed p;
  p.help = vm.count("help") > 0;
  p.version = vm.count("version") > 0;
  if (p.help || p.version) return p;
  if (vm.count("config")) {
    const std::string path = vm["config"].as<std::string>();
    const auto entries = chat::read_ini(path);
    src.from_file(path, entries);
    chat::store_ini(path, entries, conf, vm);
  }
  po::notify(vm);
  auto& d = p.daemon;
  d.transport = vm["transport"].as<std::string>();
  if (chat::transport::find_backend(d.transport) == nullptr) {
    throw UsageError(src.describe("transport") + ": unknown transport '" + d.transport +
                     "' (choose one of " + chat::transport::backend_names() + ")");
  }
  d.instance = vm["instance"].as<std::string>();
  if (!chat::is_valid_name(d.instance)) {
    throw UsageError(src.describe("instance") + ": '" + d.instance +
                     "' is not a valid name (1-32 of A-Z a-z 0-9 _ - .)");
  }
  d.runtime_dir = vm["runtime-dir"].as<std::string>();
  try {
    d.access = chat::AccessPolicy::parse(vm["access"].as<std::string>());
  } catch (const UsageError& e) {
    throw UsageError(src.describe("access") + ": " + e.what());
  }
  if (d.transport == "signal" && d.access.kind() != chat::AccessPolicy::Kind::kUser) {
    throw UsageError(src.describe("access") +
                     ": --transport=signal works only with --access=user: "
                     "the kernel lets an unprivileged process signal only processes of its own "
                     "account, so clients of other accounts could not wake the server");
  }
  d.workers = in_range(vm, src, "workers", 1, 256);
  d.history = in_range(vm, src, "history", 0, 100000);
  d.max_clients = in_range(vm, src, "max-clients", 1, 4096);
  d.client_queue_bytes = in_range(vm, src, "client-queue-bytes", 64 << 10, 1LL << 32);
  const std::string level = vm["log-level"].as<std::string>();
  if (!chat::parse_log_level(level, p.log_level)) {
    throw UsageError(src.describe("log-level") + ": '" + level +
                     "' is not one of debug, info, warn, error");
  }
  p.cleanup = vm.count("cleanup") > 0;
  p.status = vm.count("status") > 0;
  p.json = vm.count("json") > 0;
  if (p.cleanup && p.status) throw UsageError("--cleanup and --status do not go together");
  if (p.json && !p.status) throw UsageError("--json only goes with --status");
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  Parsed p;
  try {
    p = parse(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "chatd: " << e.what() << "\nTry 'chatd --help'.\n";
    return chat::server::kExitUsage;
  }
  if (p.help) {
    std::cout << "Usage: chatd [OPTIONS]\n"
                 "       chatd --status [--json] [--instance=NAME] [--runtime-dir=DIR]\n"
                 "       chatd --cleanup [--instance=NAME] [--runtime-dir=DIR]\n"
                 "The ipchat server: serves one instance in the foreground, logging to stderr.\n"
                 "Stop it with SIGINT or SIGTERM: it tells its clients, removes every IPC\n"
                 "object and file it created, and exits 0. At the default log level (info) it\n"
                 "logs one line per client that joins or leaves, is evicted or breaks the\n"
                 "protocol, and nothing per message.\n\n"
              << configurable() << "\n"
              << command_line_only()
              << "\nExit codes: 0 clean shutdown, 1 failure, 2 usage or configuration error,\n"
                 "3 another live chatd owns the instance. --status: 0, or 1 if no server runs.\n";
    return 0;
  }
  if (p.version) {
    std::cout << kVersion << "\n";
    return 0;
  }
  // Under systemd (RuntimeDirectory=) the service's runtime dir is the default base.
  if (p.daemon.runtime_dir.empty()) {
    p.daemon.runtime_dir = chat::server::service::runtime_directory();
  }
  const chat::Logger logger("chatd", p.log_level);
  try {
    if (p.status) {
      return chat::server::run_status(chat::resolve_runtime_base(p.daemon.runtime_dir),
                                      p.daemon.instance, p.json);
    }
    return p.cleanup ? chat::server::run_cleanup(p.daemon, logger)
                     : chat::server::run_daemon(p.daemon, logger);
  } catch (const UsageError& e) {
    logger.error(e.what());
    return chat::server::kExitFailure;
  } catch (const std::exception& e) {
    logger.error(e.what());
    return chat::server::kExitFailure;
  }
}

// chat-bench: every transport measured side by side in one run.
//
//   chat-bench [--transports=LIST] [--quick] [--json FILE] [--csv FILE] [--plot FILE]
//
// The table goes to stdout, progress to stderr. chat-bench re-executes itself as the peers it
// needs (`--peer=ROLE`, see peers.hpp) and starts chatd from its own build tree.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <iostream>
#include <set>
#include <sstream>

#include "bench/peers.hpp"
#include "bench/report.hpp"
#include "bench/suite.hpp"
#include "bench/zmq_bench.hpp"
#include "transport/factory.hpp"

namespace po = boost::program_options;
using namespace chat::bench;

namespace {

constexpr int kExitUsage = 2;
const std::set<std::string> kScenarios = {"pingpong", "rtt", "fanout", "idle", "stall"};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string all_transports() {
  std::string s;
  for (const auto& b : chat::transport::backends())
    s += std::string(s.empty() ? "" : ",") + std::string(b.name);
  return s + "," + kZeroMq;
}

std::filesystem::path self_path() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find my own binary (/proc/self/exe)");
  return p;
}

// chatd: --chatd, else the one installed next to chat-bench, else this build tree's (the path
// CMake compiled in, else ../server/chatd).
std::filesystem::path find_chatd(const std::string& option, const std::filesystem::path& self) {
  if (!option.empty()) return option;
  std::error_code ec;
  const auto installed = self.parent_path() / "chatd";
  if (std::filesystem::exists(installed, ec)) return installed;
  if (std::filesystem::exists(IPCHAT_CHATD, ec)) return IPCHAT_CHATD;
  return self.parent_path().parent_path() / "server" / "chatd";
}

}  // namespace

int main(int argc, char** argv) {
  chat::transport::prepare_process();
  po::options_description visible("Options");
  visible.add_options()(
      "transports", po::value<std::string>()->default_value(all_transports()),
      "comma-separated transports to measure: chat backends and 'zeromq' (the ZeroMQ ipc:// "
      "peer)")("quick", "a short run (about a minute): fewer rounds, samples and sweep points")(
      "json", po::value<std::string>(), "write the records as a JSON list to FILE")(
      "csv", po::value<std::string>(), "write the records as CSV to FILE")(
      "plot", po::value<std::string>(), "draw RTT and fan-out throughput into FILE (PNG, gnuplot)")(
      "scenarios", po::value<std::string>()->default_value("pingpong,rtt,fanout,idle,stall"),
      "comma-separated scenarios to run")("rounds", po::value<int>()->default_value(0),
                                          "rounds per scenario (0: the mode's default)")(
      "senders", po::value<std::size_t>()->default_value(4), "fanout: senders (K)")(
      "members", po::value<std::size_t>()->default_value(8),
      "fanout: receiving members of the headline point (M); the sweep adds 1..128")(
      "window", po::value<std::size_t>()->default_value(64),
      "fanout: messages in flight per sender")(
      "member-sweep", po::value<std::string>()->default_value(""),
      "fanout: comma-separated member counts (default 1,2,4,8,16,32,64,128; quick 1,8,32)")(
      "deliveries", po::value<double>()->default_value(0),
      "fanout: deliveries per run (default 300000; quick 40000)")(
      "chatd", po::value<std::string>()->default_value(""), "chatd binary (default: this build's)")(
      "help,h", "show this help and exit");
  PeerOptions peer;
  po::options_description hidden("Peer (internal)");
  hidden.add_options()("peer", po::value(&peer.role))("transport", po::value(&peer.transport))(
      "runtime-dir", po::value(&peer.runtime_dir))("instance", po::value(&peer.instance))(
      "nick", po::value(&peer.nick))("room", po::value(&peer.room))(
      "count", po::value(&peer.count))("size", po::value(&peer.size))(
      "clients", po::value(&peer.clients))("samples-file", po::value(&peer.samples_file));
  po::options_description all;
  all.add(visible).add(hidden);
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, all), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "chat-bench: " << e.what() << "\nTry 'chat-bench --help'.\n";
    return kExitUsage;
  }
  if (!peer.role.empty()) {
    peer.senders = vm["senders"].as<std::size_t>();
    peer.window = vm["window"].as<std::size_t>();
    return run_peer(peer);
  }
  if (vm.count("help")) {
    std::cout
        << "Usage: chat-bench [--transports=LIST] [--quick] [--json FILE] [--csv FILE] "
           "[--plot FILE]\n"
           "Measures every transport side by side in one run, interleaved round-robin over\n"
           "several rounds after a warm-up: raw ping-pong RTT, RTT through chatd, fan-out\n"
           "throughput and CPU per message (with a member sweep), idle CPU of chatd, and the\n"
           "RTT of the others while one member is stopped. Prints a table to stdout (with\n"
           "ratios against uds and the performance targets) and progress to stderr.\n\n"
        << visible
        << "\nScenarios: pingpong, rtt, fanout, idle, stall. Transports: " << all_transports()
        << (zmq_available() ? "" : " (zeromq: not built)") << ".\n"
        << "Exit codes: 0 every scenario ran, 1 one failed (see the table), 2 usage error.\n";
    return 0;
  }

  Settings s;
  s.quick = vm.count("quick") > 0;
  s.rounds = vm["rounds"].as<int>();
  s.senders = vm["senders"].as<std::size_t>();
  s.members = vm["members"].as<std::size_t>();
  s.window = vm["window"].as<std::size_t>();
  s.deliveries = vm["deliveries"].as<double>();
  for (const auto& m : split(vm["member-sweep"].as<std::string>())) {
    try {
      s.member_sweep.push_back(std::stoul(m));
    } catch (const std::exception&) {
      std::cerr << "chat-bench: --member-sweep: '" << m << "' is not a number\n";
      return kExitUsage;
    }
  }
  if (s.senders == 0 || s.members == 0 || s.window == 0 || s.rounds < 0) {
    std::cerr << "chat-bench: --senders, --members and --window must be at least 1\n";
    return kExitUsage;
  }
  for (const auto& name : split(vm["scenarios"].as<std::string>())) {
    if (!kScenarios.contains(name)) {
      std::cerr << "chat-bench: unknown scenario '" << name << "'\n";
      return kExitUsage;
    }
    s.scenarios.insert(name);
  }
  for (auto name : split(vm["transports"].as<std::string>())) {
    if (name == "zmq") name = kZeroMq;
    if (name == kZeroMq) {
      if (!zmq_available()) {
        std::cerr << "zeromq: skipped (libzmq not found)\n";
        continue;
      }
    } else if (chat::transport::find_backend(name) == nullptr) {
      std::cerr << "chat-bench: unknown transport '" << name << "' (choose from "
                << all_transports() << ")\n";
      return kExitUsage;
    }
    if (std::find(s.transports.begin(), s.transports.end(), name) == s.transports.end()) {
      s.transports.push_back(name);
    }
  }
  if (s.transports.empty()) {
    std::cerr << "chat-bench: no transport to measure\n";
    return kExitUsage;
  }
  try {
    s.binaries.self = self_path();
    s.binaries.chatd = find_chatd(vm["chatd"].as<std::string>(), s.binaries.self);
    if (::access(s.binaries.chatd.c_str(), X_OK) != 0) {
      std::cerr << "chat-bench: no chatd at " << s.binaries.chatd << " (use --chatd=PATH)\n";
      return kExitUsage;
    }
    const auto records = run_suite(s);
    print_table(std::cout, records, s.quick);
    if (vm.count("json")) write_json(vm["json"].as<std::string>(), records);
    if (vm.count("csv")) write_csv(vm["csv"].as<std::string>(), records);
    if (vm.count("plot")) {
      const std::string why = write_plot(vm["plot"].as<std::string>(), records);
      if (!why.empty()) std::cerr << "chat-bench: no plot: " << why << "\n";
    }
    const bool failed = std::any_of(records.begin(), records.end(),
                                    [](const Record& r) { return !r.error.empty(); });
    return failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::cerr << "chat-bench: " << e.what() << "\n";
    return 1;
  }
}

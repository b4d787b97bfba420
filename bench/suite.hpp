// The benchmark suite: every selected scenario for every selected transport, interleaved.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include "bench/runtime.hpp"
#include "bench/stats.hpp"

namespace chat::bench {

inline constexpr char kZeroMq[] = "zeromq";

struct Settings {
  bool quick = false;
  std::vector<std::string> transports;  // backend names and/or kZeroMq, in report order
  std::set<std::string> scenarios;      // pingpong, rtt, fanout, idle, stall
  Binaries binaries;
  std::size_t senders = 4;                // fanout K
  std::size_t members = 8;                // fanout M of the headline point
  std::size_t window = 64;                // fanout messages in flight per sender
  int rounds = 0;                         // 0: the mode's default per scenario
  std::vector<std::size_t> member_sweep;  // fanout M values; empty: the mode's default
  double deliveries = 0;                  // fanout deliveries per run; 0: the mode's default
};

// Runs the scenarios in the order pingpong, rtt, fanout, idle, stall; each for every
// transport, round-robin over the transports for several rounds. Progress goes to stderr.
// A transport that fails in a scenario gets a record with `error` set and is skipped for the
// rest of that scenario.
std::vector<Record> run_suite(const Settings& settings);

}  // namespace chat::bench

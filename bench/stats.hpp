// Samples, percentiles and the result records chat-bench reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace chat::bench {

// Percentiles of a set of latency samples (nearest rank, over every sample).
struct Percentiles {
  std::int64_t p50_ns = 0;
  std::int64_t p99_ns = 0;
  std::int64_t p999_ns = 0;
  std::size_t samples = 0;
};

// Sorts `samples` and takes its percentiles; nullopt if it is empty.
std::optional<Percentiles> percentiles(std::vector<std::int64_t>& samples);

// The median of `values` (e.g. one throughput per round); 0 if empty.
double median(std::vector<double> values);

// One line of the results: a scenario measured for one transport with one set of parameters.
struct Record {
  std::string scenario;                              // pingpong, rtt, fanout, idle, stall
  std::string transport;                             // a backend name, or "zeromq"
  nlohmann::json params = nlohmann::json::object();  // size, senders, members, ...
  std::optional<Percentiles> latency;
  std::optional<double> msgs_per_s;      // pingpong, rtt: round trips/s; fanout: deliveries/s
  std::optional<double> cpu_ns_per_msg;  // every process of the run, per round trip/delivery
  nlohmann::json extra = nlohmann::json::object();  // scenario-specific results
  int rounds = 0;
  std::string error;  // non-empty: the scenario failed for this transport; what happened

  // A flat object: scenario, transport, p50_ns, p99_ns, p999_ns, msgs_per_s, cpu_ns_per_msg,
  // samples, rounds, the parameters, the extras, and error (null where not applicable).
  nlohmann::json to_json() const;
};

// Appends the int64 samples a peer wrote to `file` (native byte order) and removes the file.
// Throws std::runtime_error if it cannot be read.
void read_samples(const std::filesystem::path& file, std::vector<std::int64_t>& into);
// Writes `samples` to `file` for read_samples. Throws std::system_error on failure.
void write_samples(const std::filesystem::path& file, const std::vector<std::int64_t>& samples);

}  // namespace chat::bench

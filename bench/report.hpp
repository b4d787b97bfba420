// What chat-bench makes of its records: the table on stdout (with ratios against uds and the
// performance targets), JSON, CSV and a gnuplot PNG.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "bench/stats.hpp"

namespace chat::bench {

void print_table(std::ostream& out, const std::vector<Record>& records, bool quick);

// A JSON list of Record::to_json(). Throws std::system_error if the file cannot be written.
void write_json(const std::filesystem::path& file, const std::vector<Record>& records);

// One line per record, the union of every record's keys as columns. Throws like write_json.
void write_csv(const std::filesystem::path& file, const std::vector<Record>& records);

// Draws RTT per transport and fan-out throughput against members with gnuplot (pngcairo, else
// png). Returns an empty string, or why there is no plot.
std::string write_plot(const std::filesystem::path& file, const std::vector<Record>& records);

}  // namespace chat::bench

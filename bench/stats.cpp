#include "bench/stats.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "common/error.hpp"

namespace chat::bench {

std::optional<Percentiles> percentiles(std::vector<std::int64_t>& samples) {
  if (samples.empty()) return std::nullopt;
  std::sort(samples.begin(), samples.end());
  const auto rank = [&](double q) {
    const auto k = static_cast<std::size_t>(std::ceil(q * static_cast<double>(samples.size())));
    return samples[std::clamp<std::size_t>(k, 1, samples.size()) - 1];
  };
  return Percentiles{rank(0.50), rank(0.99), rank(0.999), samples.size()};
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

nlohmann::json Record::to_json() const {
  nlohmann::json j = {{"scenario", scenario}, {"transport", transport}};
  j["p50_ns"] = latency ? nlohmann::json(latency->p50_ns) : nlohmann::json();
  j["p99_ns"] = latency ? nlohmann::json(latency->p99_ns) : nlohmann::json();
  j["p999_ns"] = latency ? nlohmann::json(latency->p999_ns) : nlohmann::json();
  j["samples"] = latency ? latency->samples : 0;
  j["msgs_per_s"] = msgs_per_s ? nlohmann::json(*msgs_per_s) : nlohmann::json();
  j["cpu_ns_per_msg"] = cpu_ns_per_msg ? nlohmann::json(*cpu_ns_per_msg) : nlohmann::json();
  j["rounds"] = rounds;
  for (const auto& [k, v] : params.items()) j[k] = v;
  for (const auto& [k, v] : extra.items()) j[k] = v;
  j["error"] = error.empty() ? nlohmann::json() : nlohmann::json(error);
  return j;
}

void read_samples(const std::filesystem::path& file, std::vector<std::int64_t>& into) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read samples from " + file.string());
  in.seekg(0, std::ios::end);
  const auto bytes = static_cast<std::size_t>(in.tellg());
  in.seekg(0);
  const std::size_t old = into.size();
  into.resize(old + bytes / sizeof(std::int64_t));
  in.read(reinterpret_cast<char*>(into.data() + old),
          static_cast<std::streamsize>((into.size() - old) * sizeof(std::int64_t)));
  in.close();
  std::error_code ec;
  std::filesystem::remove(file, ec);
}

void write_samples(const std::filesystem::path& file, const std::vector<std::int64_t>& samples) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(samples.data()),
            static_cast<std::streamsize>(samples.size() * sizeof(std::int64_t)));
  out.close();
  if (!out) throw_system_error("write", file.string(), EIO);
}

}  // namespace chat::bench

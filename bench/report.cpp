#include "bench/report.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "bench/child.hpp"
#include "common/error.hpp"

namespace chat::bench {
namespace {

using nlohmann::json;

constexpr char kBaseline[] = "uds";
constexpr char kZeroMq[] = "zeromq";

// The performance targets (bench/results/README.md) name backends; a transport not named
// here has no target.
bool is_shared_memory(const std::string& t) {
  return t == "cond" || t == "signal" || t == "mmap";
}
bool is_kernel_queue(const std::string& t) {
  return t == "fifo" || t == "msgq";
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// Microseconds with 3 significant digits or so.
std::string us(std::int64_t ns) {
  const double u = double(ns) / 1000.0;
  return fixed(u, u < 10 ? 2 : u < 100 ? 1 : 0);
}

std::string rate(double r) {
  if (r >= 1e6) return fixed(r / 1e6, 2) + "M";
  if (r >= 1e3) return fixed(r / 1e3, 1) + "k";
  return fixed(r, 0);
}

std::string pad(const std::string& s, std::size_t w, bool left = false) {
  if (s.size() >= w) return s;
  return left ? s + std::string(w - s.size(), ' ') : std::string(w - s.size(), ' ') + s;
}

// A plain text table: a header row and right-aligned columns (the first left-aligned).
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // A row of its own that does not widen the columns (a failure).
  void note(std::string first, std::string second, std::string text) {
    notes_.emplace(rows_.size(),
                   std::vector<std::string>{std::move(first), std::move(second), std::move(text)});
    rows_.emplace_back();
  }
  void print(std::ostream& out) const {
    std::vector<std::size_t> w;
    for (const auto& r : rows_) {
      for (std::size_t i = 0; i < r.size(); ++i) {
        if (w.size() <= i) w.push_back(0);
        w[i] = std::max(w[i], r[i].size());
      }
    }
    for (std::size_t k = 0; k < rows_.size(); ++k) {
      const bool is_note = notes_.contains(k);
      const auto& r = is_note ? notes_.at(k) : rows_[k];
      std::string line;
      for (std::size_t i = 0; i < r.size(); ++i) {
        line += "  " + (is_note && i == 2 ? r[i] : pad(r[i], w[i], i == 0));
      }
      out << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
  std::map<std::size_t, std::vector<std::string>> notes_;
};

const Record* find(const std::vector<Record>& rs, const std::string& scenario,
                   const std::string& transport, const json& params) {
  for (const auto& r : rs) {
    if (r.scenario != scenario || r.transport != transport || !r.error.empty()) continue;
    bool match = true;
    for (const auto& [k, v] : params.items()) match = match && r.params.value(k, json()) == v;
    if (match) return &r;
  }
  return nullptr;
}

std::string ratio(std::optional<double> a, std::optional<double> b) {
  if (!a || !b || *b == 0) return "-";
  return fixed(*a / *b, 2) + "x";
}

std::optional<double> p50(const Record* r) {
  if (r == nullptr || !r->latency) return std::nullopt;
  return double(r->latency->p50_ns);
}

std::optional<double> mps(const Record* r) {
  if (r == nullptr) return std::nullopt;
  return r->msgs_per_s;
}

std::vector<std::string> transports_of(const std::vector<Record>& rs) {
  std::vector<std::string> out;
  for (const auto& r : rs) {
    if (std::find(out.begin(), out.end(), r.transport) == out.end()) out.push_back(r.transport);
  }
  return out;
}

// " (load average 4.2)" for a scenario's section title: how busy the shared host was.
std::string load_of(const std::vector<Record>& rs, const std::string& scenario) {
  for (const auto& r : rs) {
    if (r.scenario == scenario && r.extra.contains("loadavg_1m")) {
      return " [load average " + fixed(r.extra.value("loadavg_1m", 0.0), 1) + "]";
    }
  }
  return "";
}

void latency_section(std::ostream& out, const std::vector<Record>& rs, const std::string& scenario,
                     const std::string& title, const std::string& rate_name) {
  TextTable t({"size B", "transport", "p50 us", "p99 us", "p99.9 us", rate_name, "CPU us/RT",
               "p50 vs uds", "samples"});
  bool any = false;
  for (const auto& r : rs) {
    if (r.scenario != scenario) continue;
    any = true;
    const std::string size = r.params.value("size", json()).dump();
    if (!r.error.empty()) {
      t.note(size, r.transport, "FAILED: " + r.error);
      continue;
    }
    const Record* base = find(rs, scenario, kBaseline, {{"size", r.params.value("size", json())}});
    t.add({size, r.transport, r.latency ? us(r.latency->p50_ns) : "-",
           r.latency ? us(r.latency->p99_ns) : "-", r.latency ? us(r.latency->p999_ns) : "-",
           r.msgs_per_s ? rate(*r.msgs_per_s) : "-",
           r.cpu_ns_per_msg ? fixed(*r.cpu_ns_per_msg / 1000, 2) : "-", ratio(p50(&r), p50(base)),
           std::to_string(r.latency ? r.latency->samples : 0)});
  }
  if (!any) return;
  out << "\n== " << title << load_of(rs, scenario) << "\n";
  t.print(out);
}

void fanout_section(std::ostream& out, const std::vector<Record>& rs) {
  TextTable t({"K x M", "transport", "msgs/s", "vs uds", "vs zeromq", "p50 us", "p99 us",
               "CPU ns/msg", "msgs/sender"});
  bool any = false;
  for (const auto& r : rs) {
    if (r.scenario != "fanout") continue;
    any = true;
    const std::string km =
        r.params.value("senders", json()).dump() + " x " + r.params.value("members", json()).dump();
    if (!r.error.empty()) {
      t.note(km, r.transport, "FAILED: " + r.error);
      continue;
    }
    const json point = {{"members", r.params.value("members", json())},
                        {"senders", r.params.value("senders", json())}};
    t.add({km, r.transport, r.msgs_per_s ? rate(*r.msgs_per_s) : "-",
           ratio(mps(&r), mps(find(rs, "fanout", kBaseline, point))),
           ratio(mps(&r), mps(find(rs, "fanout", kZeroMq, point))),
           r.latency ? us(r.latency->p50_ns) : "-", r.latency ? us(r.latency->p99_ns) : "-",
           r.cpu_ns_per_msg ? fixed(*r.cpu_ns_per_msg, 0) : "-",
           r.params.value("count", json()).dump()});
  }
  if (!any) return;
  out << "\n== fanout: K senders and M receivers in one room through chatd (zeromq: a PULL/PUB "
         "broker)"
      << load_of(rs, "fanout")
      << ";\n   msgs/s = deliveries to all K+M room members (senders get every message too);"
         "\n   p50/p99 = send-to-delivery latency; CPU = every process per delivery\n";
  t.print(out);
}

void idle_section(std::ostream& out, const std::vector<Record>& rs) {
  TextTable t({"transport", "chatd CPU ms", "clients CPU ms", "duration s", "target"});
  bool any = false;
  for (const auto& r : rs) {
    if (r.scenario != "idle") continue;
    any = true;
    if (!r.error.empty()) {
      t.note(r.transport, "", "FAILED: " + r.error);
      continue;
    }
    const double cpu_ms = r.extra.value("chatd_cpu_ns", 0.0) / 1e6;
    const double secs = r.params.value("duration_s", 10.0);
    t.add({r.transport, fixed(cpu_ms, 2), fixed(r.extra.value("clients_cpu_ns", 0.0) / 1e6, 2),
           fixed(secs, 0), cpu_ms < secs ? "ok (< 1 ms/s)" : "MISSED"});
  }
  if (!any) return;
  out << "\n== idle: chatd with 100 connected idle clients (every transport side by side)"
      << load_of(rs, "idle") << "\n";
  t.print(out);
}

void stall_section(std::ostream& out, const std::vector<Record>& rs) {
  TextTable t({"transport", "p50 us", "p99 us", "p50 stalled", "p99 stalled", "p99.9 stalled",
               "p99 ratio", "evicted"});
  bool any = false;
  for (const auto& r : rs) {
    if (r.scenario != "stall") continue;
    any = true;
    if (!r.error.empty() || !r.latency) {
      t.note(r.transport, "", "FAILED: " + r.error);
      continue;
    }
    t.add({r.transport, us(r.extra.value("base_p50_ns", std::int64_t{0})),
           us(r.extra.value("base_p99_ns", std::int64_t{0})), us(r.latency->p50_ns),
           us(r.latency->p99_ns), us(r.latency->p999_ns),
           fixed(r.extra.value("p99_ratio", 0.0), 2) + "x",
           r.extra.value("evicted", false) ? "yes" : "no"});
  }
  if (!any) return;
  out << "\n== stall: 4 members each send a 100-byte message every 2 ms and time its echo;\n"
         "   4 more only receive; then one of those is SIGSTOPped for the same time (what piles\n"
         "   up for it stays under client_queue_bytes: eviction is reported, not provoked)"
      << load_of(rs, "stall") << "\n";
  t.print(out);
}

void targets_section(std::ostream& out, const std::vector<Record>& rs) {
  std::vector<std::string> lines;
  const auto verdict = [](bool ok) { return ok ? "ok" : "MISSED"; };
  for (const auto& t : transports_of(rs)) {
    if (t == kBaseline) continue;
    const auto check = [&](const std::string& what, std::optional<double> a,
                           std::optional<double> b, double limit, bool at_most) {
      if (!a || !b || *b == 0) return;
      const double q = *a / *b;
      lines.push_back(pad(t, 8, true) + " " + what + " " + fixed(q, 2) + "x (target " +
                      (at_most ? "<= " : ">= ") + fixed(limit, 2) + "x) " +
                      verdict(at_most ? q <= limit : q >= limit));
    };
    const json pp100 = {{"size", 100}};
    const json fan48 = {{"senders", 4}, {"members", 8}};
    if (is_shared_memory(t) || is_kernel_queue(t)) {
      check("pingpong p50 vs uds", p50(find(rs, "pingpong", t, pp100)),
            p50(find(rs, "pingpong", kBaseline, pp100)), is_shared_memory(t) ? 0.25 : 1.0, true);
    }
    if (is_shared_memory(t)) {
      check("rtt p50 vs uds     ", p50(find(rs, "rtt", t, pp100)),
            p50(find(rs, "rtt", kBaseline, pp100)), 0.5, true);
      check("fanout 4x8 vs uds  ", mps(find(rs, "fanout", t, fan48)),
            mps(find(rs, "fanout", kBaseline, fan48)), 3.0, false);
    }
    if (t != kZeroMq) {
      check("fanout 4x8 vs zmq  ", mps(find(rs, "fanout", t, fan48)),
            mps(find(rs, "fanout", kZeroMq, fan48)), 1.0, false);
    }
  }
  for (const auto& r : rs) {
    if (!r.error.empty()) continue;
    if (r.scenario == "idle") {
      const double ms = r.extra.value("chatd_cpu_ns", 0.0) / 1e6;
      const double secs = r.params.value("duration_s", 10.0);
      lines.push_back(pad(r.transport, 8, true) + " idle chatd CPU " + fixed(ms, 2) + " ms over " +
                      fixed(secs, 0) + " s (target < " + fixed(secs, 0) + " ms) " +
                      verdict(ms < secs));
    }
    if (r.scenario == "stall" && r.extra.contains("p99_ratio")) {
      const double q = r.extra.value("p99_ratio", 0.0);
      lines.push_back(pad(r.transport, 8, true) + " stall p99 vs without " + fixed(q, 2) +
                      "x (target <= 2.00x) " + verdict(q <= 2.0) +
                      (r.extra.value("evicted", false) ? " (the stopped member was evicted)" : ""));
    }
  }
  if (lines.empty()) return;
  out << "\n== performance targets (ratios against uds measured in this run)\n";
  for (const auto& l : lines) out << "  " << l << "\n";
}

std::ofstream open_out(const std::filesystem::path& file) {
  std::ofstream out(file, std::ios::trunc);
  if (!out) throw_system_error("open", file.string());
  return out;
}

// PATH lookup for posix_spawn.
std::optional<std::filesystem::path> find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    const auto p = std::filesystem::path(d) / name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return std::nullopt;
}

std::string num(std::optional<double> v) {
  return v ? fixed(*v, 3) : "NaN";
}

std::string plot_script(const std::string& terminal, const std::filesystem::path& file,
                        const std::vector<Record>& rs) {
  const auto ts = transports_of(rs);
  std::ostringstream s;
  s << "set terminal " << terminal << " size 1600,1200 font 'sans,10'\n";
  s << "set output '" << file.string() << "'\n";
  s << "set datafile missing 'NaN'\n";
  // RTT per transport: pingpong and rtt, p50 and p99, 100-byte messages.
  // Columns: transport, pingpong p50, rtt p50, pingpong p99, rtt p99 (us).
  s << "$rtt << EOD\n";
  for (const auto& t : ts) {
    const auto us_of = [&](const char* scenario, bool p99) -> std::optional<double> {
      const Record* r = find(rs, scenario, t, {{"size", 100}});
      if (r == nullptr || !r->latency) return std::nullopt;
      return double(p99 ? r->latency->p99_ns : r->latency->p50_ns) / 1000.0;
    };
    s << t << " " << num(us_of("pingpong", false)) << " " << num(us_of("rtt", false)) << " "
      << num(us_of("pingpong", true)) << " " << num(us_of("rtt", true)) << "\n";
  }
  s << "EOD\n";
  const auto block = [&](const std::string& name, const std::string& scenario, const std::string& x,
                         auto value) {
    for (std::size_t i = 0; i < ts.size(); ++i) {
      s << "$" << name << i << " << EOD\n";
      for (const auto& r : rs) {
        if (r.scenario != scenario || r.transport != ts[i] || !r.error.empty()) continue;
        if (scenario == "fanout" && r.params.value("senders", 0) != 4) continue;
        s << r.params.value(x, json()).dump() << " " << num(value(r)) << "\n";
      }
      s << "EOD\n";
    }
  };
  block("fan", "fanout", "members", [](const Record& r) { return r.msgs_per_s; });
  block("cpu", "fanout", "members", [](const Record& r) { return r.cpu_ns_per_msg; });
  block("size", "pingpong", "size", [](const Record& r) -> std::optional<double> {
    if (!r.latency) return std::nullopt;
    return double(r.latency->p50_ns) / 1000.0;
  });
  const auto lines = [&](const std::string& name) {
    std::string out = "plot ";
    for (std::size_t i = 0; i < ts.size(); ++i) {
      out += (i ? ", " : "") + std::string("$") + name + std::to_string(i) +
             " using 1:2 with linespoints lw 2 title '" + ts[i] + "'";
    }
    return out + "\n";
  };
  s << "set multiplot layout 2,2 title 'chat-bench: every transport in one run'\n";
  s << "set style data histogram\nset style histogram clustered gap 1\nset style fill solid 0.8 "
       "border -1\n"
       "set logscale y\nset grid ytics\nset key top left\nset ylabel 'round trip, us (log)'\n"
       "set title 'RTT of 100-byte messages: raw ping-pong and through chatd'\n"
       "plot $rtt using 2:xtic(1) title 'pingpong p50', '' using 3 title 'rtt p50', "
       "'' using 4 title 'pingpong p99', '' using 5 title 'rtt p99'\n";
  s << "unset style\nset style data linespoints\nset logscale x 2\nset logscale y\nset grid\n"
       "set key top right\nset xlabel 'members receiving (4 senders)'\n"
       "set ylabel 'delivered messages/s (log)'\nset title 'fan-out throughput against members'\n"
    << lines("fan");
  s << "set ylabel 'CPU ns per delivered message (log)'\n"
       "set title 'fan-out CPU time of all processes per delivery'\n"
    << lines("cpu");
  s << "set xlabel 'frame bytes'\nset ylabel 'p50 round trip, us (log)'\n"
       "set title 'raw ping-pong p50 against frame size'\nset key top left\n"
    << lines("size");
  s << "unset multiplot\n";
  return s.str();
}

}  // namespace

void print_table(std::ostream& out, const std::vector<Record>& rs, bool quick) {
  out << "chat-bench results" << (quick ? " (--quick)" : "")
      << ": percentiles over every sample of every round; rates are the median of the rounds\n";
  latency_section(out, rs, "pingpong",
                  "pingpong: raw Transport round trip between two processes (RT/s = round trips "
                  "per second; CPU = both processes per round trip)",
                  "RT/s");
  latency_section(out, rs, "rtt",
                  "rtt: a chat client sends a room message and waits for its own echo through "
                  "chatd (CPU = client + chatd per round trip)",
                  "RT/s");
  fanout_section(out, rs);
  idle_section(out, rs);
  stall_section(out, rs);
  targets_section(out, rs);
  out.flush();
}

void write_json(const std::filesystem::path& file, const std::vector<Record>& records) {
  json list = json::array();
  for (const auto& r : records) list.push_back(r.to_json());
  auto out = open_out(file);
  out << list.dump(2) << "\n";
  if (!out) throw_system_error("write", file.string(), EIO);
}

void write_csv(const std::filesystem::path& file, const std::vector<Record>& records) {
  std::vector<std::string> columns = {"scenario",       "transport", "p50_ns",
                                      "p99_ns",         "p999_ns",   "msgs_per_s",
                                      "cpu_ns_per_msg", "samples",   "rounds"};
  std::vector<json> rows;
  for (const auto& r : records) {
    rows.push_back(r.to_json());
    for (const auto& [k, v] : rows.back().items()) {
      if (std::find(columns.begin(), columns.end(), k) == columns.end() && k != "error") {
        columns.push_back(k);
      }
    }
  }
  columns.push_back("error");
  auto out = open_out(file);
  for (std::size_t i = 0; i < columns.size(); ++i) out << (i ? "," : "") << columns[i];
  out << "\n";
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < columns.size(); ++i) {
      if (i) out << ",";
      const json v = row.value(columns[i], json());
      if (v.is_null()) continue;
      if (v.is_string()) {
        std::string s = v.get<std::string>();
        std::string quoted = "\"";
        for (char c : s) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
        out << quoted << "\"";
      } else if (v.is_number_float()) {
        out << fixed(v.get<double>(), 3);
      } else {
        out << v.dump();
      }
    }
    out << "\n";
  }
  if (!out) throw_system_error("write", file.string(), EIO);
}

std::string write_plot(const std::filesystem::path& file, const std::vector<Record>& records) {
  const auto gnuplot = find_program("gnuplot");
  if (!gnuplot) return "gnuplot not found (install gnuplot-nox)";
  const auto absolute = std::filesystem::absolute(file);
  std::string last_error;
  for (const std::string terminal : {"pngcairo", "png"}) {
    Child g({gnuplot->string()});
    g.send_line(plot_script(terminal, absolute, records));
    g.close_stdin();
    const auto code = g.wait(deadline_after(std::chrono::seconds(60)));
    if (code && *code == 0) return "";
    last_error = "gnuplot (terminal " + terminal + ") failed";
  }
  return last_error;
}

}  // namespace chat::bench

#include "bench/suite.hpp"

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "bench/child.hpp"
#include "bench/pinger.hpp"
#include "bench/zmq_bench.hpp"
#include "common/instance.hpp"
#include "transport/factory.hpp"

namespace chat::bench {
namespace {

using namespace std::chrono_literals;

constexpr auto kStartTimeout = 30s;  // a loaded 2-core machine starting 100+ processes
constexpr auto kDoneTimeout = 120s;

void progress(const std::string& line) {
  std::cerr << "chat-bench: " << line << std::endl;
}

bool is_zmq(const std::string& t) {
  return t == kZeroMq;
}

// What one scenario collected for one transport at one point of its sweep.
struct Acc {
  std::vector<std::int64_t> samples;
  std::vector<double> rates;  // one per round
  double cpu_ns = 0;          // every process, over the measured part of every round
  double msgs = 0;            // round trips or deliveries over the same
  int rounds = 0;
  nlohmann::json params = nlohmann::json::object();
  nlohmann::json extra = nlohmann::json::object();
  std::string error;
};

// Accumulators of one scenario: per sweep point (in sweep order), per transport.
class Table {
 public:
  Acc& at(const nlohmann::json& params, const std::string& transport) {
    const std::string key = params.dump();
    auto it =
        std::find_if(points_.begin(), points_.end(), [&](const auto& p) { return p.first == key; });
    if (it == points_.end()) {
      points_.emplace_back(key, std::map<std::string, Acc>{});
      it = std::prev(points_.end());
    }
    Acc& a = it->second[transport];
    a.params = params;
    return a;
  }

  void to_records(const std::string& scenario, const std::vector<std::string>& transports,
                  std::vector<Record>& out) {
    for (auto& [key, per_transport] : points_) {
      for (const auto& t : transports) {
        const auto it = per_transport.find(t);
        if (it == per_transport.end()) continue;
        Acc& a = it->second;
        Record r;
        r.scenario = scenario;
        r.transport = t;
        r.params = a.params;
        r.extra = a.extra;
        r.rounds = a.rounds;
        r.error = a.error;
        r.latency = percentiles(a.samples);
        if (!a.rates.empty()) r.msgs_per_s = median(a.rates);
        if (a.msgs > 0) r.cpu_ns_per_msg = a.cpu_ns / a.msgs;
        out.push_back(std::move(r));
      }
    }
  }

 private:
  // A list: references to accumulators stay valid while points are added.
  std::list<std::pair<std::string, std::map<std::string, Acc>>> points_;
};

// Raises the first line starting with "error" a peer printed, or says it printed nothing.
[[noreturn]] void peer_failed(Child& c, const std::string& what,
                              const std::optional<std::string>& line) {
  if (line && line->starts_with("error")) throw std::runtime_error(what + ": " + line->substr(6));
  throw std::runtime_error(what + ": no answer" + (c.running() ? " in time" : " (it exited)"));
}

void await(Child& c, const std::string& prefix, const std::string& what,
           Clock::duration timeout = kStartTimeout) {
  const Deadline deadline = deadline_after(timeout);
  for (;;) {
    auto line = c.read_line(deadline);
    if (!line || line->starts_with("error")) peer_failed(c, what, line);
    if (line->starts_with(prefix)) return;
  }
}

// Reads the next "done ..." line; returns its fields after "done".
std::vector<std::string> await_done(Child& c, const std::string& what,
                                    Clock::duration timeout = kDoneTimeout) {
  const Deadline deadline = deadline_after(timeout);
  for (;;) {
    auto line = c.read_line(deadline);
    if (!line || line->starts_with("error")) peer_failed(c, what, line);
    if (!line->starts_with("done")) continue;
    std::istringstream in(line->substr(4));
    std::vector<std::string> fields;
    for (std::string f; in >> f;) fields.push_back(f);
    return fields;
  }
}

// Closes a peer's stdin and expects it to exit 0 within `timeout`.
void finish(Child& c, const std::string& what, Clock::duration timeout = 10s) {
  c.close_stdin();
  const auto code = c.wait(deadline_after(timeout));
  if (!code) throw std::runtime_error(what + " did not exit after end-of-file");
  if (*code != 0) throw std::runtime_error(what + " exited with " + std::to_string(*code));
}

// A chatd serving a run's instance. stop() sends SIGTERM and checks for a clean exit.
class Chatd {
 public:
  Chatd(const Settings& s, TempRuntime& rt, const std::string& transport,
        std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {s.binaries.chatd.string(), "--transport=" + transport,
                                     "--log-level=warn"};
    for (auto& a : rt.args()) argv.push_back(a);
    for (auto& a : extra) argv.push_back(a);
    child_ = std::make_unique<Child>(argv);
    rt.started(child_->pid());
    const Deadline deadline = deadline_after(kStartTimeout);
    while (Clock::now() < deadline) {
      try {
        if (find_live_instance(rt.base(), rt.instance())) return;
      } catch (const std::exception&) {
        // instance.json not there yet
      }
      if (!child_->running()) break;
      std::this_thread::sleep_for(2ms);
    }
    throw std::runtime_error("chatd --transport=" + transport + " did not start");
  }
  ~Chatd() {
    if (child_->running()) {
      child_->signal(SIGTERM);
      child_->wait(deadline_after(3s));
    }
  }
  Chatd(const Chatd&) = delete;
  Chatd& operator=(const Chatd&) = delete;

  std::int64_t cpu_ns() const { return child_->cpu_ns(); }
  pid_t pid() const { return child_->pid(); }

  // SIGTERM; throws unless chatd exits 0 within 3 s (DESIGN.md allows 2 s).
  void stop() {
    child_->signal(SIGTERM);
    const auto code = child_->wait(deadline_after(3s));
    if (!code) throw std::runtime_error("chatd did not exit within 3 s of SIGTERM");
    if (*code != 0) throw std::runtime_error("chatd exited with " + std::to_string(*code));
  }

 private:
  std::unique_ptr<Child> child_;
};

std::unique_ptr<Child> spawn_peer(const Settings& s, TempRuntime& rt, const std::string& role,
                                  const std::vector<std::string>& args) {
  std::vector<std::string> argv = {s.binaries.self.string(), "--peer=" + role};
  for (auto& a : rt.args()) argv.push_back(a);
  for (auto& a : args) argv.push_back(a);
  auto c = std::make_unique<Child>(argv);
  rt.started(c->pid());
  return c;
}

// Throws if the run left anything behind (checked once all its processes have exited).
void check_clean(const TempRuntime& rt) {
  const auto left = rt.leftovers();
  if (left.empty()) return;
  std::string all;
  for (const auto& l : left) all += (all.empty() ? "" : ", ") + l;
  throw std::runtime_error("left behind: " + all);
}

// The 1-minute load average of the host; -1 if unknown.
double load_average() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  in >> load;
  return in ? load : -1;
}

// The client end of a raw transport ping-pong.
class TransportPinger final : public Pinger {
 public:
  TransportPinger(const std::string& transport, const TempRuntime& rt) {
    transport::ConnectOptions co =
        transport::arrive(rt.dir(), rt.instance(), deadline_after(kStartTimeout));
    if (co.pass.transport != transport) {
      throw std::runtime_error("the echo server serves " + co.pass.transport + ", not " +
                               transport);
    }
    connection_ = transport::connect(std::move(co));
  }
  bool round_trip(std::span<const std::byte> frame, std::vector<std::byte>& reply) override {
    if (connection_->send(frame, deadline_after(20s)) != transport::SendResult::kSent) return false;
    return connection_->receive(reply, deadline_after(20s)) == transport::ReceiveResult::kFrame;
  }

 private:
  std::unique_ptr<transport::ClientConnection> connection_;
};

class Suite {
 public:
  explicit Suite(const Settings& s) : s_(s) {
    for (const auto& t : s_.transports) {
      if (!is_zmq(t)) chat_transports_.push_back(t);
    }
  }

  std::vector<Record> run() {
    std::vector<Record> out;
    const auto scenario = [&](const char* name, void (Suite::*body)(std::vector<Record>&)) {
      if (!s_.scenarios.contains(name)) return;
      const std::size_t first = out.size();
      (this->*body)(out);
      // How busy the machine was: on a shared 2-core host this decides whether spinning can
      // ever pay off, so it belongs next to the numbers.
      const double load = load_average();
      for (std::size_t i = first; i < out.size(); ++i) out[i].extra["loadavg_1m"] = load;
    };
    scenario("pingpong", &Suite::pingpong);
    scenario("rtt", &Suite::rtt);
    scenario("fanout", &Suite::fanout);
    scenario("idle", &Suite::idle);
    scenario("stall", &Suite::stall);
    return out;
  }

 private:
  int rounds(int quick, int full) const {
    return s_.rounds > 0 ? s_.rounds : s_.quick ? quick : full;
  }

  // Runs `body` for every transport not failed yet in this scenario, catching its failure
  // into every accumulator of `table` for that transport.
  template <typename Body>
  void each_transport(const std::vector<std::string>& transports, Table& table,
                      std::map<std::string, std::string>& failed, const std::string& scenario,
                      const nlohmann::json& point, Body&& body) {
    for (const auto& t : transports) {
      if (failed.contains(t)) continue;
      try {
        body(t);
      } catch (const std::exception& e) {
        progress(scenario + " " + t + ": FAILED: " + e.what());
        failed[t] = e.what();
        table.at(point, t).error = e.what();
      }
    }
  }

  // ---- pingpong: the Transport interface directly, echo server in a child process ----
  void pingpong(std::vector<Record>& out) {
    const std::vector<std::size_t> sizes = s_.quick
                                               ? std::vector<std::size_t>{16, 100, 4000}
                                               : std::vector<std::size_t>{16, 100, 256, 1024, 4000};
    const std::size_t n = s_.quick ? 2000 : 5000;
    const std::size_t warm = s_.quick ? 300 : 1000;
    const int R = rounds(2, 5);
    Table table;
    std::map<std::string, std::string> failed;
    for (int r = 0; r < R; ++r) {
      progress("pingpong round " + std::to_string(r + 1) + "/" + std::to_string(R));
      each_transport(
          s_.transports, table, failed, "pingpong", {{"size", 100}}, [&](const std::string& t) {
            TempRuntime rt("pp");
            auto peer =
                spawn_peer(s_, rt, is_zmq(t) ? "zmq-echo" : "echo-server", {"--transport=" + t});
            await(*peer, "ready", "echo server");
            std::unique_ptr<Pinger> pinger = is_zmq(t) ? connect_zmq_pinger(rt.base())
                                                       : std::make_unique<TransportPinger>(t, rt);
            std::vector<std::byte> reply;
            for (const std::size_t size : sizes) {
              std::vector<std::byte> frame(size, std::byte{'x'});
              for (std::size_t i = 0; i < warm; ++i) {
                if (!pinger->round_trip(frame, reply))
                  throw std::runtime_error("warm-up round trip failed");
              }
              Acc& a = table.at({{"size", size}}, t);
              a.samples.reserve(a.samples.size() + n);
              const std::int64_t cpu0 = own_cpu_ns() + peer->cpu_ns();
              const std::int64_t start = now_ns();
              for (std::size_t i = 0; i < n; ++i) {
                const std::int64_t t0 = now_ns();
                if (!pinger->round_trip(frame, reply) || reply.size() != size) {
                  throw std::runtime_error("round trip failed");
                }
                a.samples.push_back(now_ns() - t0);
              }
              const std::int64_t elapsed = now_ns() - start;
              a.cpu_ns += double(own_cpu_ns() + peer->cpu_ns() - cpu0);
              a.msgs += double(n);
              a.rates.push_back(double(n) * 1e9 / double(elapsed));
              ++a.rounds;
            }
            pinger.reset();
            finish(*peer, "echo server");
            check_clean(rt);
          });
    }
    table.to_records("pingpong", s_.transports, out);
  }

  // ---- rtt: a ChatSession (in a child) sends and waits for its own echo through chatd ----
  void rtt(std::vector<Record>& out) {
    if (chat_transports_.empty()) return;
    const std::vector<std::size_t> sizes =
        s_.quick ? std::vector<std::size_t>{100} : std::vector<std::size_t>{16, 100, 1000, 4000};
    const std::size_t n = s_.quick ? 1000 : 3000;
    const std::size_t warm = s_.quick ? 200 : 500;
    const int R = rounds(2, 5);
    Table table;
    std::map<std::string, std::string> failed;
    for (int r = 0; r < R; ++r) {
      progress("rtt round " + std::to_string(r + 1) + "/" + std::to_string(R));
      each_transport(
          chat_transports_, table, failed, "rtt", {{"size", 100}}, [&](const std::string& t) {
            TempRuntime rt("rtt");
            Chatd chatd(s_, rt, t);
            auto client = spawn_peer(s_, rt, "chat-client", {"--transport=" + t, "--nick=a0"});
            await(*client, "ready", "chat client");
            const std::string file = (rt.base() / "samples.a0").string();
            for (const std::size_t size : sizes) {
              const auto run = [&](std::size_t count) {
                client->send_line("run " + std::to_string(count) + " 0 0 " + std::to_string(size) +
                                  " 0 " + file);
                return await_done(*client, "chat client");
              };
              run(warm);
              std::vector<std::int64_t> discard;
              read_samples(file, discard);
              Acc& a = table.at({{"size", size}}, t);
              const std::int64_t cpu0 = chatd.cpu_ns();
              const auto done = run(n);
              const std::int64_t chatd_cpu = chatd.cpu_ns() - cpu0;
              read_samples(file, a.samples);
              const double got = std::stod(done.at(0));
              a.cpu_ns += double(chatd_cpu) + std::stod(done.at(2));
              a.msgs += got;
              a.rates.push_back(got * 1e9 / std::stod(done.at(1)));
              ++a.rounds;
            }
            finish(*client, "chat client");
            chatd.stop();
            check_clean(rt);
          });
    }
    table.to_records("rtt", chat_transports_, out);
  }

  // ---- fanout: K senders and M receivers in one room ----
  void fanout(std::vector<Record>& out) {
    const std::size_t K = s_.senders;
    std::vector<std::size_t> sweep = !s_.member_sweep.empty() ? s_.member_sweep
                                     : s_.quick
                                         ? std::vector<std::size_t>{1, 8, 32}
                                         : std::vector<std::size_t>{1, 2, 4, 8, 16, 32, 64, 128};
    if (std::find(sweep.begin(), sweep.end(), s_.members) == sweep.end()) {
      sweep.push_back(s_.members);
      std::sort(sweep.begin(), sweep.end());
    }
    const double target = s_.deliveries > 0 ? s_.deliveries : s_.quick ? 40'000 : 300'000;
    const int R = rounds(1, 3);
    Table table;
    // A failure skips that point of the sweep for the transport, not the others.
    std::map<std::size_t, std::map<std::string, std::string>> failed;
    for (int r = 0; r < R; ++r) {
      for (const std::size_t M : sweep) {
        const std::size_t count = std::clamp<std::size_t>(
            static_cast<std::size_t>(target / double(K * (K + M))), 50, 1'000'000);
        const nlohmann::json point = {
            {"senders", K}, {"members", M}, {"window", s_.window}, {"size", 100}, {"count", count}};
        progress("fanout round " + std::to_string(r + 1) + "/" + std::to_string(R) + ": " +
                 std::to_string(K) + " senders x " + std::to_string(M) + " members, " +
                 std::to_string(count) + " messages each");
        each_transport(s_.transports, table, failed[M], "fanout", point, [&](const std::string& t) {
          fanout_run(t, K, M, count, table.at(point, t));
        });
      }
    }
    table.to_records("fanout", s_.transports, out);
  }

  void fanout_run(const std::string& t, std::size_t K, std::size_t M, std::size_t count, Acc& a) {
    TempRuntime rt("fan");
    std::unique_ptr<Chatd> chatd;
    std::unique_ptr<Child> broker;
    if (is_zmq(t)) {
      broker = spawn_peer(s_, rt, "zmq-broker", {});
      await(*broker, "ready", "zeromq broker");
    } else {
      // Deliveries are windowed per sender, not per receiver: allow a receiver to fall behind
      // by the whole run rather than evict it (the stall scenario measures eviction).
      chatd = std::make_unique<Chatd>(
          s_, rt, t,
          std::vector<std::string>{"--client-queue-bytes=1073741824",
                                   "--max-clients=" + std::to_string(K + M + 8)});
    }
    std::vector<std::unique_ptr<Child>> clients;
    std::vector<std::string> files;
    for (std::size_t i = 0; i < K + M; ++i) {
      const bool sender = i < K;
      const std::string nick = sender ? "s" + std::to_string(i) : "m" + std::to_string(i - K);
      files.push_back((rt.base() / ("samples." + nick)).string());
      clients.push_back(spawn_peer(
          s_, rt, is_zmq(t) ? "zmq-fan-client" : "fan-client",
          {"--transport=" + t, "--nick=" + nick, "--senders=" + std::to_string(K),
           "--count=" + std::to_string(count), "--window=" + std::to_string(sender ? s_.window : 0),
           "--size=100", "--samples-file=" + files.back()}));
    }
    for (auto& c : clients) await(*c, "ready", "fan-out client");
    const auto server_cpu = [&] { return chatd ? chatd->cpu_ns() : broker->cpu_ns(); };
    const std::int64_t cpu0 = server_cpu();
    const std::int64_t start = now_ns();
    for (auto& c : clients) c->send_line("go");
    std::int64_t end = start;
    double cpu = 0, delivered = 0;
    for (auto& c : clients) {
      const auto done = await_done(*c, "fan-out client");
      end = std::max<std::int64_t>(end, std::stoll(done.at(0)));
      cpu += std::stod(done.at(1));
      delivered += std::stod(done.at(2));
    }
    const double server = double(server_cpu() - cpu0);
    cpu += server;
    for (auto& c : clients) finish(*c, "fan-out client");
    if (chatd) chatd->stop();
    if (broker) finish(*broker, "zeromq broker");
    for (const auto& f : files) read_samples(f, a.samples);
    check_clean(rt);
    a.cpu_ns += cpu;
    a.msgs += delivered;
    // The server's share (chatd or the broker), to tell it from the clients'.
    a.extra["server_cpu_ns_per_msg"] =
        (a.extra.value("server_cpu_ns_per_msg", 0.0) * (a.msgs - delivered) + server) / a.msgs;
    a.rates.push_back(delivered * 1e9 / double(end - start));
    ++a.rounds;
  }

  // ---- idle: chatd with idle clients; every transport side by side over one window ----
  void idle(std::vector<Record>& out) {
    if (chat_transports_.empty()) return;
    const std::size_t clients = 100;
    const auto window = s_.quick ? 3s : 10s;
    const double seconds = std::chrono::duration<double>(window).count();
    Table table;
    std::map<std::string, std::string> failed;
    const nlohmann::json point = {{"clients", clients}, {"duration_s", seconds}};
    struct Setup {
      std::string transport;
      std::unique_ptr<TempRuntime> rt;
      std::unique_ptr<Chatd> chatd;
      std::unique_ptr<Child> host;
      std::int64_t chatd_cpu0 = 0, host_cpu0 = 0;
    };
    std::vector<Setup> setups;
    progress("idle: starting chatd with " + std::to_string(clients) +
             " idle clients per transport");
    each_transport(chat_transports_, table, failed, "idle", point, [&](const std::string& t) {
      Setup s;
      s.transport = t;
      s.rt = std::make_unique<TempRuntime>("idle");
      s.chatd = std::make_unique<Chatd>(s_, *s.rt, t);
      s.host = spawn_peer(s_, *s.rt, "idle-host",
                          {"--transport=" + t, "--nick=i", "--clients=" + std::to_string(clients)});
      await(*s.host, "ready", "idle host", 120s);
      setups.push_back(std::move(s));
    });
    std::this_thread::sleep_for(500ms);  // let the joins settle
    const auto host_cpu = [](Child& host) {
      host.send_line("cpu");
      const auto line = host.expect("cpu ", deadline_after(10s));
      if (!line) throw std::runtime_error("the idle host did not report its CPU time");
      return std::stoll(line->substr(4));
    };
    const auto setup_of = [&](const std::string& t) {
      return std::find_if(setups.begin(), setups.end(),
                          [&](const Setup& s) { return s.transport == t; });
    };
    each_transport(chat_transports_, table, failed, "idle", point, [&](const std::string& t) {
      const auto it = setup_of(t);
      if (it == setups.end()) return;
      it->chatd_cpu0 = it->chatd->cpu_ns();
      it->host_cpu0 = host_cpu(*it->host);
    });
    progress("idle: measuring for " + std::to_string(int(seconds)) + " s");
    std::this_thread::sleep_for(window);
    each_transport(chat_transports_, table, failed, "idle", point, [&](const std::string& t) {
      const auto it = setup_of(t);
      if (it == setups.end()) return;
      Acc& a = table.at(point, t);
      a.extra["chatd_cpu_ns"] = it->chatd->cpu_ns() - it->chatd_cpu0;
      a.extra["clients_cpu_ns"] = host_cpu(*it->host) - it->host_cpu0;
      a.rounds = 1;
      finish(*it->host, "idle host", 30s);
      it->chatd->stop();
      check_clean(*it->rt);
    });
    table.to_records("idle", chat_transports_, out);
  }

  // ---- stall: paced round trips of active members, with and without one member stopped ----
  void stall(std::vector<Record>& out) {
    if (chat_transports_.empty()) return;
    const std::size_t active = 4, passive = 4;
    const long long interval_us = 2000;
    const double seconds = s_.quick ? 0.8 : 2.0;
    const int R = rounds(1, 2);
    const nlohmann::json point = {{"active", active},
                                  {"members", active + passive},
                                  {"interval_us", interval_us},
                                  {"duration_s", seconds},
                                  {"size", 100}};
    Table table;
    std::map<std::string, std::string> failed;
    std::map<std::string, std::vector<std::int64_t>> baseline;
    for (int r = 0; r < R; ++r) {
      progress("stall round " + std::to_string(r + 1) + "/" + std::to_string(R));
      each_transport(chat_transports_, table, failed, "stall", point, [&](const std::string& t) {
        TempRuntime rt("stall");
        Chatd chatd(s_, rt, t);
        std::vector<std::unique_ptr<Child>> senders, members;
        for (std::size_t i = 0; i < active; ++i) {
          senders.push_back(spawn_peer(s_, rt, "chat-client",
                                       {"--transport=" + t, "--nick=a" + std::to_string(i)}));
        }
        for (std::size_t i = 0; i < passive; ++i) {
          members.push_back(
              spawn_peer(s_, rt, "member", {"--transport=" + t, "--nick=p" + std::to_string(i)}));
        }
        for (auto& c : senders) await(*c, "ready", "chat client");
        for (auto& c : members) await(*c, "ready", "member");
        Acc& a = table.at(point, t);
        std::size_t evictions = 0;
        const auto phase = [&](std::vector<std::int64_t>& into, bool measure_rate) {
          for (std::size_t i = 0; i < senders.size(); ++i) {
            senders[i]->send_line("run 0 0 " + std::to_string(interval_us) + " 100 " +
                                  std::to_string(seconds) + " " +
                                  (rt.base() / ("samples.a" + std::to_string(i))).string());
          }
          double got = 0;
          for (std::size_t i = 0; i < senders.size(); ++i) {
            const auto done = await_done(*senders[i], "chat client");
            evictions += std::stoull(done.at(3));
            got += std::stod(done.at(0));
            read_samples(rt.base() / ("samples.a" + std::to_string(i)), into);
          }
          if (measure_rate) a.rates.push_back(got / seconds);
        };
        phase(baseline[t], false);
        members[0]->signal(SIGSTOP);
        phase(a.samples, true);
        members[0]->signal(SIGCONT);
        bool evicted = evictions > 0;
        if (const auto line = members[0]->read_line(deadline_after(300ms))) {
          evicted = evicted || *line == "evicted";
        }
        a.extra["evicted"] = a.extra.value("evicted", false) || evicted;
        ++a.rounds;
        for (auto& c : senders) finish(*c, "chat client");
        for (auto& c : members) finish(*c, "member");
        chatd.stop();
        check_clean(rt);
      });
    }
    for (const auto& t : chat_transports_) {
      if (failed.contains(t)) continue;
      Acc& a = table.at(point, t);
      const auto base = percentiles(baseline[t]);
      auto during = a.samples;
      const auto stalled = percentiles(during);
      if (base && stalled) {
        a.extra["base_p50_ns"] = base->p50_ns;
        a.extra["base_p99_ns"] = base->p99_ns;
        a.extra["base_p999_ns"] = base->p999_ns;
        a.extra["p99_ratio"] = double(stalled->p99_ns) / double(base->p99_ns);
      }
    }
    table.to_records("stall", chat_transports_, out);
  }

  const Settings& s_;
  std::vector<std::string> chat_transports_;
};

}  // namespace

std::vector<Record> run_suite(const Settings& settings) {
  Suite suite(settings);
  return suite.run();
}

}  // namespace chat::bench

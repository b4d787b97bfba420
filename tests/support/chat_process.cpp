#include "tests/support/chat_process.hpp"

#include <signal.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace chat::test {

std::vector<std::string> all_backends() {
  std::vector<std::string> names;
  for (const auto& b : transport::backends()) names.emplace_back(b.name);
  return names;
}

std::vector<std::string> shm_backends() {
  std::vector<std::string> names;
  for (const auto& b : transport::backends()) {
    if (b.shm_flavor != nullptr) names.emplace_back(b.name);
  }
  return names;
}

std::unique_ptr<Process> start_chat(const TempRuntime& rt, const std::string& nick,
                                    std::vector<std::string> extra, bool wait_welcome) {
  std::vector<std::string> argv = {binary("chat").string(), "-n", nick, "--jsonl"};
  for (auto& a : rt.args()) argv.push_back(a);
  for (auto& a : extra) argv.push_back(a);
  auto p = std::make_unique<Process>(argv);
  if (wait_welcome && !wait_events(*p, "welcome", 1, std::chrono::seconds(10))) {
    throw std::runtime_error("chat -n " + nick + " did not get a welcome: " + p->err());
  }
  return p;
}

std::vector<nlohmann::json> events(const Process& p, const std::string& event) {
  std::vector<nlohmann::json> out;
  for (const auto& line : p.out_lines()) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) throw std::runtime_error("not a JSON line: " + line);
    if (event.empty() || j.value("event", "") == event) out.push_back(std::move(j));
  }
  return out;
}

std::size_t count_events(const std::string& out, const std::string& event) {
  const std::string needle = "\"event\":\"" + event + "\"";
  std::size_t n = 0;
  for (std::size_t at = out.find(needle); at != std::string::npos; at = out.find(needle, at + 1))
    ++n;
  return n;
}

bool wait_events(Process& p, const std::string& event, std::size_t n,
                 std::chrono::milliseconds timeout) {
  // Counts incrementally over complete lines: the output of a busy client grows to megabytes,
  // and rescanning it on every chunk would slow the reader down enough to get it evicted.
  std::size_t scanned = 0, count = 0;
  return p.wait_out(
      [&](const std::string& out) {
        const std::size_t end = out.rfind('\n');
        if (end != std::string::npos && end + 1 > scanned) {
          count += count_events(out.substr(scanned, end + 1 - scanned), event);
          scanned = end + 1;
        }
        return count >= n;
      },
      timeout);
}

void check_contiguous(const Process& p, const std::string& who) {
  std::map<std::string, std::uint64_t> last;
  for (const auto& e : events(p)) {
    if (!e.contains("seq") || !e.contains("room") || e.value("history", false)) continue;
    const std::string room = e["room"];
    const std::uint64_t seq = e["seq"];
    if (last.contains(room)) {
      BOOST_CHECK_MESSAGE(seq == last[room] + 1,
                          who << " saw seq " << seq << " after " << last[room] << " in " << room);
    }
    last[room] = seq;
  }
}

void stop_and_check_clean(Process& chatd, const TempRuntime& rt, std::vector<pid_t> pids,
                          std::chrono::milliseconds timeout) {
  chatd.kill(SIGTERM);
  BOOST_CHECK_MESSAGE(chatd.exit_code(timeout) == 0, "chatd did not exit 0 within "
                                                         << timeout.count()
                                                         << " ms after SIGTERM: " << chatd.err());
  pids.push_back(chatd.pid());
  check_no_leftovers(rt, pids);
}

namespace {

std::string first_line_of(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

std::string diagnose(const TempRuntime& rt, const std::vector<pid_t>& pids) {
  std::ostringstream out;
  std::vector<std::string> argv = {binary("chatd").string(), "--status"};
  for (auto& a : rt.args()) argv.push_back(a);
  Process status(argv);
  const int code = status.exit_code(5s);
  out << "chatd --status (exit " << code << "):\n" << status.out() << status.err();
  for (const pid_t pid : pids) {
    const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(tasks, ec)) {
      // stat: "tid (comm) state ..."; wchan: the kernel function it sleeps in.
      const std::string stat = first_line_of(t.path() / "stat");
      const auto close = stat.rfind(')');
      out << "pid " << pid << " thread " << t.path().filename().string() << ": "
          << stat.substr(0, close == std::string::npos ? 0 : close + 3) << " "
          << first_line_of(t.path() / "wchan") << "\n";
    }
  }
  return out.str();
}

}  // namespace chat::test

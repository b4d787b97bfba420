// Soak: 32 clients x 2000 messages over each transport, with clients SIGKILLed at random
// moments. Every survivor's stream must be contiguous and complete, and nothing may be left
// behind. Not part of the default run (minutes per transport): scripts/soak.sh runs it.
#define BOOST_TEST_MODULE soak
#include <signal.h>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <map>
#include <random>
#include <set>

#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"

namespace bdata = boost::unit_test::data;
using namespace chat::test;

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoi(v) : fallback;
}

// The texts of message events, and whether every room event's seq is contiguous.
struct Transcript {
  std::vector<std::pair<std::string, std::string>> messages;  // (from, text)
  bool contiguous = true;
  std::uint64_t first_gap = 0;
};

Transcript read_transcript(const Process& p) {
  Transcript t;
  std::uint64_t last = 0;
  for (const auto& e : events(p)) {
    if (!e.contains("seq") || e.value("history", false)) continue;
    const std::uint64_t seq = e["seq"];
    if (last != 0 && seq != last + 1 && t.contiguous) {
      t.contiguous = false;
      t.first_gap = seq;
    }
    last = seq;
    if (e["event"] == "message") t.messages.emplace_back(e["from"], e["text"]);
  }
  return t;
}

}  // namespace

BOOST_DATA_TEST_CASE(soak, bdata::make(all_backends()), transport) {
  const int kClients = env_int("IPCHAT_SOAK_CLIENTS", 32);
  const int kMessages = env_int("IPCHAT_SOAK_MESSAGES", 2000);
  const int kKills = env_int("IPCHAT_SOAK_KILLS", 4);
  constexpr int kChunk = 100;  // lines in flight per client: keeps every backlog far below 1 MiB
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  std::vector<std::unique_ptr<Process>> clients;
  std::vector<std::string> nicks;
  for (int i = 0; i < kClients; ++i) {
    nicks.push_back("n" + std::to_string(i));
    clients.push_back(start_chat(rt, nicks.back()));
  }
  BOOST_REQUIRE(wait_events(*clients.back(), "welcome", 1, 10s));
  std::mt19937 rng(static_cast<unsigned>(env_int("IPCHAT_SOAK_SEED", 2026)));
  std::set<int> killed;
  std::map<int, int> kill_after;  // client -> chunk after which it is killed
  while (static_cast<int>(kill_after.size()) < kKills) {
    kill_after[static_cast<int>(rng() % kClients)] = static_cast<int>(rng() % (kMessages / kChunk));
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int chunk = 0; chunk * kChunk < kMessages; ++chunk) {
    for (int i = 0; i < kClients; ++i) {
      if (killed.contains(i)) continue;
      std::string lines;
      for (int k = chunk * kChunk; k < std::min(kMessages, (chunk + 1) * kChunk); ++k) {
        lines += nicks[i] + " " + std::to_string(k) + "\n";
      }
      clients[i]->write(lines);
    }
    // Wait until each live client has its own echo of this chunk: flow control.
    for (int i = 0; i < kClients; ++i) {
      if (killed.contains(i)) continue;
      const std::string last = "\"text\":\"" + nicks[i] + " " +
                               std::to_string(std::min(kMessages, (chunk + 1) * kChunk) - 1) + "\"";
      BOOST_REQUIRE_MESSAGE(
          clients[i]->wait_out_contains(last, 60s),
          nicks[i] << " never got its echo of chunk " << chunk << ": " << clients[i]->err());
    }
    for (const auto& [i, when] : kill_after) {
      if (when == chunk && !killed.contains(i)) {
        clients[i]->kill(SIGKILL);
        killed.insert(i);
      }
    }
  }
  for (int i = 0; i < kClients; ++i) {
    if (!killed.contains(i)) clients[i]->close_stdin();
  }
  for (int i = 0; i < kClients; ++i) {
    if (!killed.contains(i)) BOOST_TEST(clients[i]->exit_code(60s) == 0);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Every survivor saw every survivor's messages, each sender's in order, with no gap in seq.
  std::vector<Transcript> transcripts(kClients);
  for (int i = 0; i < kClients; ++i) {
    if (killed.contains(i)) continue;
    transcripts[i] = read_transcript(*clients[i]);
    BOOST_CHECK_MESSAGE(transcripts[i].contiguous,
                        nicks[i] << " saw a seq gap at " << transcripts[i].first_gap);
    std::map<std::string, int> next;
    for (const auto& [from, text] : transcripts[i].messages) {
      const std::string expect = from + " " + std::to_string(next[from]++);
      if (text != expect) {
        BOOST_ERROR(nicks[i] << " got '" << text << "', expected '" << expect << "'");
        break;
      }
    }
    for (int j = 0; j < kClients; ++j) {
      if (!killed.contains(j)) BOOST_CHECK_EQUAL(next[nicks[j]], kMessages);
    }
  }
  BOOST_TEST_MESSAGE(transport << ": " << kClients << " clients x " << kMessages << " messages, "
                               << killed.size() << " killed, in " << seconds << " s");
  std::vector<pid_t> pids;
  for (auto& c : clients) pids.push_back(c->pid());
  stop_and_check_clean(*chatd, rt, pids, 5s);
}

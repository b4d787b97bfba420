// Helpers for tests that drive real chatd and chat processes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/support.hpp"
#include "transport/factory.hpp"

namespace chat::test {

// The backend names of the factory table, for BOOST_DATA_TEST_CASE.
std::vector<std::string> all_backends();
// Those of them built on shared memory (with a shm_flavor).
std::vector<std::string> shm_backends();

// Starts `chat -n NICK --jsonl` on `rt` with stdin kept open, and waits for its welcome.
std::unique_ptr<Process> start_chat(const TempRuntime& rt, const std::string& nick,
                                    std::vector<std::string> extra = {}, bool wait_welcome = true);

// The JSON objects a `chat --jsonl` printed so far; with `event`, only those events.
std::vector<nlohmann::json> events(const Process& p, const std::string& event = "");

// Counts lines of stdout whose "event" is `event`.
std::size_t count_events(const std::string& out, const std::string& event);

// Waits until `p` printed at least `n` events of kind `event`.
bool wait_events(Process& p, const std::string& event, std::size_t n,
                 std::chrono::milliseconds timeout);

// Checks that every live room event (message, join, part, nick) `p` saw carries a per-room seq
// one past the previous one it saw in that room; `who` names `p` in the failure message.
void check_contiguous(const Process& p, const std::string& who);

// For failure messages: what `chatd --status` says about the server on `rt`, and where each
// thread of each of `pids` is blocked (/proc/PID/task/TID: state and wait channel).
std::string diagnose(const TempRuntime& rt, const std::vector<pid_t>& pids);

// Stops `chatd` with SIGTERM and checks that it exits 0 within `timeout`, and that nothing is
// left of it or of `pids` (see check_no_leftovers()).
void stop_and_check_clean(Process& chatd, const TempRuntime& rt, std::vector<pid_t> pids,
                          std::chrono::milliseconds timeout = 2s);

}  // namespace chat::test

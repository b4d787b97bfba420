// The processes chat-bench re-executes itself as (`chat-bench --peer=ROLE ...`). Each talks to
// the bench through lines: it prints "ready" once set up, takes commands on stdin, answers
// "done ..." (or "error ..."), and cleans up and exits at end-of-file on stdin.
#pragma once

#include <cstddef>
#include <string>

namespace chat::bench {

struct PeerOptions {
  std::string role;
  std::string transport;    // a backend name
  std::string runtime_dir;  // base dir of the run
  std::string instance;
  std::string nick;
  std::string room = "bench";
  std::size_t senders = 0;  // fan-client: how many senders the room has (K)
  std::size_t count = 0;    // fan-client: messages per sender (N)
  std::size_t window = 0;   // fan-client: messages in flight per sender; 0: only receive
  std::size_t size = 100;   // fan-client: text bytes
  std::size_t clients = 0;  // idle-host: connections to hold
  std::string samples_file;
};

// Runs `options.role`; returns the process exit code. Roles:
//   echo-server  raw transport: listen, publish instance.json, echo every frame to its sender
//   chat-client  a ChatSession; per stdin line "run COUNT WARMUP INTERVAL_US SIZE SECONDS FILE"
//                sends messages one at a time and times each until its own echo, writes the
//                samples to FILE and prints "done N ELAPSED_NS CPU_NS EVICTIONS_SEEN"
//   fan-client   a ChatSession in the fan-out room; after "go" sends COUNT messages (window
//                WINDOW) if it is a sender, receives every sender's messages, then prints
//                "done END_NS CPU_NS RECEIVED" and writes delivery latencies to the file
//   member       a ChatSession that only receives; prints "evicted" or "closed" if the
//                server ends the connection
//   idle-host    CLIENTS idle ChatSessions, each with a thread blocked in receive; "cpu" on
//                stdin prints "cpu NS" (its own CPU time so far)
//   zmq-*        the ZeroMQ peers (zmq_bench.hpp)
int run_peer(const PeerOptions& options);

// Prints `line` to stdout and flushes it: the bench is waiting for it.
void say(const std::string& line);

// A message text of exactly `size` bytes (at least 1) starting with "<a> <b> ".
std::string make_text(long long a, std::size_t b, std::size_t size);

}  // namespace chat::bench

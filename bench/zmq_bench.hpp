// The ZeroMQ peer: the same ping-pong and fan-out shapes as the chat transports, over
// ZeroMQ `ipc://` endpoints in the run's runtime base dir. Built only where libzmq is found
// (pkg-config); elsewhere zmq_available() is false and the rest is never called.
#pragma once

#include <filesystem>
#include <memory>

#include "bench/peers.hpp"
#include "bench/pinger.hpp"

namespace chat::bench {

// True if chat-bench was built with libzmq.
bool zmq_available();

// Runs a zmq-* peer role; returns the exit code.
//   zmq-echo        a PAIR socket bound at BASE/zmq-pp.sock; echoes every message
//   zmq-broker      PULL bound at BASE/zmq-in.sock, PUB at BASE/zmq-out.sock (no high-water
//                   marks: nothing dropped, like chatd's unbounded-enough outboxes in fanout);
//                   forwards every message it pulls to every subscriber
//   zmq-fan-client  PUSH to the broker and SUB from it; otherwise as fan-client
int run_zmq_peer(const PeerOptions& options);

// Connects to the zmq-echo peer of the run in `base`. Throws std::runtime_error on failure.
std::unique_ptr<Pinger> connect_zmq_pinger(const std::filesystem::path& base);

}  // namespace chat::bench

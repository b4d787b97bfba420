// `signal`: System V shared memory rings (a private segment per client, its id granted through
// the door); a client's sleeping thread blocks in sigtimedwait and is woken by a real-time
// signal the server sends to that thread. The ring is the data, the signal only a doorbell.
// The server itself sleeps on the server bell (an eventfd per client), like cond and mmap.
// Same account only: the kernel lets an unprivileged process signal only its own uid, so
// listen() refuses any --access but `user`.
//
// No signal handler is ever installed: the doorbell signals are blocked in every thread
// (block_doorbell_signals(), from transport::prepare_process()) and only ever taken with
// sigtimedwait by the thread they were sent to.
#pragma once

#include <signal.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "transport/shm/engine.hpp"
#include "transport/shm/wake.hpp"
#include "transport/transport.hpp"

namespace chat::transport::sig {

// The real-time signal that rings the doorbell.
int doorbell_signal();
// What is sent instead when the real-time signal cannot be queued (EAGAIN: the per-user
// RLIMIT_SIGPENDING quota is full). A standard signal coalesces and is never refused.
inline constexpr int kFallbackSignal = SIGURG;

// Both doorbell signals.
sigset_t doorbell_signals();

// Blocks the doorbell signals in the calling thread, and so in every thread it creates later.
// std::system_error on failure.
void block_doorbell_signals();

// The backend's Waker, for tests that drive it directly.
std::unique_ptr<shm::Waker> make_waker();

// This backend's memory source and waker (for tests that play a hostile client).
shm::Flavor flavor(const std::filesystem::path& dir);

// Throws std::runtime_error unless options.access is `user`.
std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options);
std::unique_ptr<ClientConnection> connect(ConnectOptions options);
std::vector<std::string> cleanup(const CleanupOptions& options);

}  // namespace chat::transport::sig

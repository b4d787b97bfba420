// `msgq`: System V message queues, reached through the front door (door.hpp). Each client gets
// two keyless queues of its own from the server, handed to its account alone: up (client to
// server) and down (server to client); the server sleeps in epoll and is rung through the
// server bell (bell.hpp). See wire.hpp for the messages, server.cpp and client.cpp for how
// readiness and ends are detected, stream.hpp for the frames, alarm.hpp for the client's
// wake-ups, sysv_queue.hpp for the queues and their record.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "transport/transport.hpp"

namespace chat::transport::msgq {

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options);
// Uses only options.pass: what the server granted at the door.
std::unique_ptr<ClientConnection> connect(ConnectOptions options);
// Removes the queues a dead server listed (its record in the runtime dir, and the objects of its
// instance.json) that are still ours and match the listing; the files go with the directory.
// Also finds the queues of the pre-door msgq (the same record).
std::vector<std::string> cleanup(const CleanupOptions& options);

}  // namespace chat::transport::msgq

// `msgq`: System V message queues. One server queue (ftok key on a file in the runtime dir) for
// hellos and everything clients send, one queue per client for what the server sends; see
// wire.hpp for the messages and msgq.cpp for how readiness and deaths are detected.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "transport/transport.hpp"

namespace chat::transport::msgq {

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options);
std::unique_ptr<ClientConnection> connect(ConnectOptions options);
// Removes the queues a dead server recorded in its runtime dir (those still ours and unchanged);
// the files themselves go with the directory.
std::vector<std::string> cleanup(const CleanupOptions& options);

}  // namespace chat::transport::msgq

// `uds`: AF_UNIX SOCK_SEQPACKET sockets in the runtime dir — the baseline.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "transport/transport.hpp"

namespace chat::transport::uds {

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options);
std::unique_ptr<ClientConnection> connect(ConnectOptions options);
std::vector<std::string> cleanup(const CleanupOptions& options);

}  // namespace chat::transport::uds

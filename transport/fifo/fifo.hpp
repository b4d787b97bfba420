// `fifo`: named pipes in the runtime dir. A server FIFO for hellos and one FIFO pair per client,
// created by the server; see wire.hpp for the handshake and the framing.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "transport/transport.hpp"

namespace chat::transport::fifo {

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options);
std::unique_ptr<ClientConnection> connect(ConnectOptions options);
// The FIFOs live in the runtime dir, which the caller empties: nothing else to remove.
std::vector<std::string> cleanup(const CleanupOptions& options);

}  // namespace chat::transport::fifo

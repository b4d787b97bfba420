// `fifo`: pipes with names for a moment only. Clients come in through the front door; the
// server makes each one a FIFO pair in the runtime dir, opens it, passes the client its two ends
// and unlinks the names at once. See wire.hpp for the framing; server.cpp, client.cpp and
// stream.cpp for the two roles and the frame stream they share.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "transport/transport.hpp"

namespace chat::transport::fifo {

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options);
std::unique_ptr<ClientConnection> connect(ConnectOptions options);
// Removes the FIFOs a server killed at the wrong moment left in the runtime dir (which the
// caller empties anyway), our own and those of the legacy hello-FIFO handshake.
std::vector<std::string> cleanup(const CleanupOptions& options);

}  // namespace chat::transport::fifo

// The `fifo` backend's client connection: the two pipe ends the server granted at the door.
#pragma once

#include <memory>

#include "transport/transport.hpp"

namespace chat::transport::fifo {

// Checks the grant in `options.pass` and takes its descriptors. Throws ConnectError.
std::unique_ptr<ClientConnection> make_client(ConnectOptions options);

}  // namespace chat::transport::fifo

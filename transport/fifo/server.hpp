// The `fifo` backend's server endpoint: admits clients at the front door and gives each a FIFO
// pair of its own (channel.hpp).
#pragma once

#include <memory>

#include "transport/transport.hpp"

namespace chat::transport::fifo {

std::unique_ptr<ServerEndpoint> make_server(const ListenOptions& options);

}  // namespace chat::transport::fifo

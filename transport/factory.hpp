// The backends by name: the one table that maps `--transport=NAME` to an implementation.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "transport/transport.hpp"

namespace chat::transport {

namespace shm {
struct Flavor;
}

struct Backend {
  std::string_view name;
  std::string_view summary;  // one line for --help and the README
  std::unique_ptr<ServerEndpoint> (*listen)(const ListenOptions&);
  std::unique_ptr<ClientConnection> (*connect)(ConnectOptions);
  // Removes what a dead server of this backend left behind; returns a line per object removed.
  std::vector<std::string> (*cleanup)(const CleanupOptions&);
  // Shared-memory backends only: their memory and wake-ups, for tests that play a hostile
  // client (shm::Attachment). nullptr for the others.
  shm::Flavor (*shm_flavor)(const std::filesystem::path& dir) = nullptr;
};

// Every backend, in a fixed order (the order of DESIGN.md).
std::span<const Backend> backends();

// The backend called `name`, or nullptr.
const Backend* find_backend(std::string_view name);

// "cond, signal, ..." for messages.
std::string backend_names();

// The client's way in: enters the door of the server in `dir` (BASE/INSTANCE) and returns what
// the server granted, with `pass.transport` naming the backend to open it with. Throws
// ConnectError (kNoServer when nothing serves the instance, kPermission when the server does
// not admit this account...).
ConnectOptions arrive(const std::filesystem::path& dir, const std::string& instance,
                      Deadline deadline);

// Opens the channel `options` describes with the backend it names. Throws ConnectError.
std::unique_ptr<ClientConnection> connect(ConnectOptions options);

// Prepares the calling process for any transport: blocks the doorbell signals some backends
// use, and SIGPIPE, in the calling thread (so in every thread created after it). Call first
// thing in main() of every program that uses a transport, before starting threads.
void prepare_process();

}  // namespace chat::transport

// `mmap`: the shared-memory rings live in regular files in the runtime dir, mapped MAP_SHARED:
// the server creates DIR/mmap.c<slot>.<generation> 0600, passes its descriptor through the
// door and unlinks it once granted. A client's sleeping thread waits on a process-shared POSIX
// semaphore inside the mapping; the server sleeps on the server bell. A client can truncate
// its file: the server's mappings are guarded (shm/sigbus_guard.hpp).
#pragma once

#include <semaphore.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "transport/shm/engine.hpp"
#include "transport/shm/memory.hpp"
#include "transport/shm/wake.hpp"
#include "transport/transport.hpp"

namespace chat::transport::mmap {

// What a WakeArea holds for this backend.
struct SemWake {
  sem_t sem;
};
inline SemWake& sem_wake(shm::WakeArea& area) {
  return *reinterpret_cast<SemWake*>(area.impl);
}

// The files of the instance in `dir`, each created O_EXCL|O_NOFOLLOW, 0600 whatever the umask;
// a client maps a granted descriptor only if it is a private regular file of the server's
// account of the expected size.
std::unique_ptr<shm::MemorySource> make_file_source(const std::filesystem::path& dir);

// This backend's memory source and waker (for tests that play a hostile client).
shm::Flavor flavor(const std::filesystem::path& dir);

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options);
std::unique_ptr<ClientConnection> connect(ConnectOptions options);
// Every file of this backend lives in the runtime dir, which the caller empties: nothing to do.
std::vector<std::string> cleanup(const CleanupOptions& options);

}  // namespace chat::transport::mmap

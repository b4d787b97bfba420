// `mmap`: the shared-memory rings live in regular files in the runtime dir, mapped MAP_SHARED
// (DIR/mmap.ctl, DIR/mmap.c<slot>.<generation>); a sleeper waits on a process-shared POSIX
// semaphore inside the mapping.
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

// The files of the instance in `dir`, each created O_EXCL, 0600 whatever the umask; opened
// only if it is a regular file of ours (no symlink), private, and of the expected size.
std::unique_ptr<shm::MemorySource> make_file_source(const std::filesystem::path& dir);

// This backend's memory source and waker (for tests that play a hostile client).
shm::Flavor flavor(const std::filesystem::path& dir);

std::unique_ptr<ServerEndpoint> listen(const ListenOptions& options);
std::unique_ptr<ClientConnection> connect(ConnectOptions options);
// Every file of this backend lives in the runtime dir, which the caller empties: nothing to do.
std::vector<std::string> cleanup(const CleanupOptions& options);

}  // namespace chat::transport::mmap

// POSIX shared memory (shm_open, /dev/shm) as a MemorySource, through Boost.Interprocess.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "transport/shm/memory.hpp"

namespace chat::transport::shm {

// Segments are named "ipchat.<instance tag>.<what>" under /dev/shm.
std::unique_ptr<MemorySource> make_posix_shm_source(const std::filesystem::path& dir);

// Removes every /dev/shm entry of the instance in `dir` (a dead server's); returns their names.
std::vector<std::string> remove_posix_shm_leftovers(const std::filesystem::path& dir);

}  // namespace chat::transport::shm

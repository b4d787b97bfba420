// POSIX shared memory names (/dev/shm) of the instance in a runtime dir. Servers from before
// the door named their segments "ipchat.<instance tag>.<what>"; no segment has a name now, but
// a restarting server still removes what such a server left.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace chat::transport::shm {

// Removes every /dev/shm entry of the instance in `dir` (a dead server's); returns their names.
std::vector<std::string> remove_posix_shm_leftovers(const std::filesystem::path& dir);

}  // namespace chat::transport::shm

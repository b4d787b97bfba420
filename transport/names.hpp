// Names of IPC objects that live outside the runtime dir (/dev/shm, SysV keys): derived from
// the instance's directory so that instances never collide and leftovers can be found again.
#pragma once

#include <filesystem>
#include <string>

namespace chat::transport {

// "<uid>.<16 hex digits of a hash of the absolute runtime dir path>".
std::string instance_tag(const std::filesystem::path& dir);

}  // namespace chat::transport

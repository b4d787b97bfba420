// Names of IPC objects that live outside the runtime dir (/dev/shm, SysV keys): derived from
// the instance's directory so that instances never collide and leftovers can be found again.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace chat::transport {

// "<uid>.<16 hex digits of a hash of the absolute runtime dir path>".
std::string instance_tag(const std::filesystem::path& dir);

// What of the instance in `dir` is left outside its runtime dir: /dev/shm entries carrying its
// tag, and SysV shared memory segments and message queues created or last used by one of `pids`
// and last changed at or after `since` (SysV objects carry no name to know them by; the time
// keeps an object leaked long ago by an earlier process with a now reused pid out of it). One
// description each ("/dev/shm/NAME", "SysV msg id 42"), for messages; empty if nothing is left.
std::vector<std::string> leftover_ipc_objects(const std::filesystem::path& dir,
                                              const std::vector<pid_t>& pids, std::time_t since);

}  // namespace chat::transport

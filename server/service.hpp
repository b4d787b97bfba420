// chatd under a service manager (systemd): readiness and shutdown notifications, and the
// directories the manager made for the service. Outside systemd every call here is a no-op.
#pragma once

#include <string>
#include <string_view>

namespace chat::server::service {

// Tells the manager (sd_notify(3), through $NOTIFY_SOCKET) that clients can connect now;
// `status` becomes the unit's STATUS= line. Nothing happens when NOTIFY_SOCKET is unset.
void notify_ready(std::string_view status);

// Tells the manager that chatd has begun shutting down (STOPPING=1).
void notify_stopping(std::string_view status);

// The first directory of $RUNTIME_DIRECTORY, which systemd sets for RuntimeDirectory=; empty
// when unset or not an absolute path. chatd takes it as the default of --runtime-dir.
std::string runtime_directory();

}  // namespace chat::server::service

// transport_peer: the other end of a transport in its own process, for tests that need a
// peer to die, hold a lock, or serve.
//
//   transport_peer client BACKEND BASE INSTANCE MODE [N]
//       MODE idle:  connect, print "connected", wait until the connection closes
//       MODE send:  connect, send N frames "frame-<i>", print "sent", wait until closed
//       MODE echo:  connect, print "connected", send every frame back until closed
//       MODE close: connect, send N frames, print "sent", close the connection, print
//                   "closed", and live on until stdin ends (then exit 0)
//     On close prints "closed server_alive=<0|1>".
//   transport_peer server BACKEND BASE INSTANCE
//       acquire the instance dir, listen, publish instance.json, print "ready", echo every
//       frame back to its sender, until killed
//   transport_peer hold-lock BACKEND BASE INSTANCE
//       (shared-memory backends) enter through the door, take every lock in the granted
//       segment the server could want (cond: the robust mutexes of both wake areas; the other
//       flavors have none), print "locked", and sleep until killed
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "common/instance.hpp"
#include "common/protocol.hpp"
#include "tests/support/frames.hpp"
#include "transport/cond/cond.hpp"
#include "transport/factory.hpp"
#include "transport/shm/engine.hpp"
#include "transport/shm/layout.hpp"

using namespace chat;
using namespace chat::transport;

namespace {

void say(const std::string& line) {
  std::cout << line << std::endl;  // flushed: the test waits for it
}

int client(const Backend& backend, const std::string& base, const std::string& instance,
           const std::string& mode, int n) {
  std::unique_ptr<ClientConnection> c;
  try {
    ConnectOptions co = arrive(std::filesystem::path(base) / instance, instance,
                               deadline_after(std::chrono::seconds(5)));
    if (co.pass.transport != backend.name) {
      std::cerr << "the server's transport is " << co.pass.transport << "\n";
      return 1;
    }
    c = backend.connect(std::move(co));
  } catch (const ConnectError& e) {
    std::cerr << e.what() << "\n";
    return e.kind() == ConnectError::Kind::kNoServer ? 3 : 1;
  }
  if (mode == "send" || mode == "close") {
    for (int i = 0; i < n; ++i) c->send(test::frame_of("frame-" + std::to_string(i)), kNoDeadline);
    say("sent");
  }
  if (mode == "close") {
    // Closes the connection and lives on until stdin ends.
    c.reset();
    say("closed");
    std::string line;
    while (std::getline(std::cin, line)) {
    }
    return 0;
  }
  if (mode != "send") {
    say("connected");
  }
  Frame f;
  for (;;) {
    const auto r = c->receive(f, kNoDeadline);
    if (r == ReceiveResult::kClosed) break;
    if (r == ReceiveResult::kFrame && mode == "echo") c->send(f, kNoDeadline);
  }
  say(std::string("closed server_alive=") + (c->server_alive() ? "1" : "0"));
  return 0;
}

int server(const Backend& backend, const std::string& base, const std::string& instance) {
  auto dir = InstanceDir::acquire(base, instance);
  ListenOptions lo;
  lo.dir = dir.path();
  lo.instance = instance;
  lo.max_clients = 16;
  auto ep = backend.listen(lo);
  InstanceInfo info;
  info.instance = instance;
  info.transport = std::string(backend.name);
  info.pid = ::getpid();
  info.protocol = protocol::kVersion;
  info.objects = ep->objects();
  dir.publish(info);
  say("ready");
  std::vector<ServerEvent> events;
  for (;;) {
    events.clear();
    ep->poll(events, kNoDeadline);
    for (auto& ev : events) {
      if (ev.kind == ServerEvent::Kind::kFrame) ep->send(ev.client, ev.frame);
      if (ev.kind == ServerEvent::Kind::kDisconnected) ep->close(ev.client);
    }
  }
}

int hold_lock(const Backend& backend, const std::string& base, const std::string& instance) {
  if (backend.shm_flavor == nullptr) return 3;
  const std::filesystem::path dir = std::filesystem::path(base) / instance;
  shm::Flavor flavor = backend.shm_flavor(dir);
  ConnectOptions co = arrive(dir, instance, deadline_after(std::chrono::seconds(5)));
  auto att = shm::Attachment::attach(co, flavor);
  if (backend.name == "cond") {
    cond::cond_wake(att.block().rx_wake).mutex.lock(kNoDeadline);
    cond::cond_wake(att.block().tx_wake).mutex.lock(kNoDeadline);
    // Asleep as far as the server can tell: every frame it sends tries the held lock.
    att.block().rx_wake.sleeping.store(1);
  }
  say("locked");
  for (;;) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  prepare_process();
  const std::vector<std::string> a(argv, argv + argc);
  try {
    if (a.size() >= 6 && a[1] == "client") {
      const Backend* b = find_backend(a[2]);
      return client(*b, a[3], a[4], a[5], a.size() > 6 ? std::stoi(a[6]) : 0);
    }
    if (a.size() == 5 && a[1] == "server") return server(*find_backend(a[2]), a[3], a[4]);
    if (a.size() == 5 && a[1] == "hold-lock") return hold_lock(*find_backend(a[2]), a[3], a[4]);
  } catch (const std::exception& e) {
    std::cerr << "transport_peer: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: see the comment at the top of transport_peer.cpp\n";
  return 2;
}

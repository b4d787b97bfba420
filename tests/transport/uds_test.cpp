// The uds transport against hostile input: a client admitted at the door that then writes
// what no real client writes to its socket (an empty datagram, a packet longer than a frame,
// bytes that are no frame of the protocol). The server drops that client and only that one.
#define BOOST_TEST_MODULE uds
#include <poll.h>
#include <sys/socket.h>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "common/limits.hpp"
#include "common/protocol.hpp"
#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"
#include "transport/factory.hpp"

namespace bdata = boost::unit_test::data;
using namespace chat;
using namespace chat::test;

namespace {

const std::vector<std::string> kHostile = {"empty_datagram", "over_long_packet", "garbage_frame"};

// Sends one packet of `bytes` on the door-granted socket; false if the kernel refused it.
bool send_packet(int fd, const std::vector<std::byte>& bytes) {
  return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

// Reads (and drops) what the server sends until it closes the socket; false if it has not
// closed it by `timeout`.
bool closed_by_server(int fd, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  std::vector<std::byte> buf(2 * kMaxFrameBytes);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EINTR) return true;  // ECONNRESET: closed as well
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(uds)

BOOST_DATA_TEST_CASE(hostile_input_drops_only_that_client, bdata::make(kHostile), hostile) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, "uds");
  auto alice = start_chat(rt, "alice");
  auto bob = start_chat(rt, "bob");

  // Mallory enters through the door like any client and says a proper hello...
  auto co = transport::arrive(rt.dir(), rt.instance(), deadline_after(10s));
  BOOST_REQUIRE(co.pass.transport == "uds");
  const int fd = co.pass.socket.get();
  BOOST_REQUIRE(send_packet(fd, protocol::encode(protocol::Hello{"mallory", "lobby"})));
  BOOST_REQUIRE(wait_events(*alice, "join", 3, 20s));  // alice, bob, mallory
  BOOST_REQUIRE(events(*alice, "join").at(2)["nick"] == "mallory");

  // ...then breaks the rules.
  std::vector<std::byte> bad;
  if (hostile == "over_long_packet") {
    bad.assign(kMaxFrameBytes + 1, std::byte{'x'});
  } else if (hostile == "garbage_frame") {
    for (const char c : std::string("\xff\xfe garbage, no frame of ours \x01\x02")) {
      bad.push_back(static_cast<std::byte>(c));
    }
  }
  BOOST_REQUIRE_MESSAGE(send_packet(fd, bad), hostile << ": send: " << std::strerror(errno));

  // The server hangs up on mallory, and the room sees mallory lost...
  BOOST_TEST(closed_by_server(fd, 20s), hostile << ": the server kept the connection");
  BOOST_REQUIRE(wait_events(*bob, "part", 1, 20s));
  const auto part = events(*bob, "part").at(0);
  BOOST_TEST(part["nick"] == "mallory");
  BOOST_TEST(part["reason"] == "lost");

  // ...while alice and bob keep chatting, both ways.
  alice->write("still here\n");
  BOOST_REQUIRE_MESSAGE(wait_events(*bob, "message", 1, 20s), bob->err());
  BOOST_TEST(events(*bob, "message").at(0)["text"] == "still here");
  bob->write("me too\n");
  BOOST_REQUIRE_MESSAGE(wait_events(*alice, "message", 2, 20s), alice->err());
  BOOST_TEST(events(*alice, "message").at(1)["text"] == "me too");
  BOOST_TEST(events(*alice, "part").size() == 1u);  // mallory's only
  BOOST_REQUIRE_MESSAGE(chatd->running(), "chatd died: " << chatd->err());

  co.pass.socket.reset();
  alice->close_stdin();
  bob->close_stdin();
  BOOST_TEST(alice->exit_code(10s) == 0, alice->err());
  BOOST_TEST(bob->exit_code(10s) == 0, bob->err());
  stop_and_check_clean(*chatd, rt, {alice->pid(), bob->pid()});
}

BOOST_AUTO_TEST_SUITE_END()

// Crashes around shared state: a client SIGKILLed while it holds the shared robust lock.
#define BOOST_TEST_MODULE crash
#include <signal.h>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "tests/support/chat_process.hpp"
#include "tests/support/main_fixture.hpp"

namespace bdata = boost::unit_test::data;
using namespace chat::test;

BOOST_AUTO_TEST_SUITE(crash)

// A client enters through the door, takes the robust locks in its own segment (the ones the
// server would take to wake it) and is killed holding them.
BOOST_DATA_TEST_CASE(client_killed_holding_its_lock_costs_only_itself,
                     bdata::make(shm_backends()), transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport);
  auto alice = start_chat(rt, "alice");
  Process holder({binary("transport_peer").string(), "hold-lock", transport, rt.base().string(),
                  rt.instance()});
  BOOST_REQUIRE_MESSAGE(holder.wait_out_contains("locked", 5s), holder.err());

  // While a live (stuck) process holds it, the server and its clients are not affected: the
  // server never takes a lock a client can hold.
  alice->write("while it is held\n");
  BOOST_REQUIRE_MESSAGE(wait_events(*alice, "message", 1, 5s), "a held lock stalled the server");

  holder.kill(SIGKILL);
  BOOST_TEST(holder.exit_code(5s) == 128 + SIGKILL);

  // A dead holder costs nobody anything: others keep chatting and newcomers get in.
  alice->write("after the crash\n");
  BOOST_REQUIRE(wait_events(*alice, "message", 2, 5s));
  auto bob = start_chat(rt, "bob");
  bob->write("hello alice\n");
  BOOST_REQUIRE(wait_events(*alice, "message", 3, 5s));
  BOOST_TEST(events(*alice, "message").back()["from"] == "bob");
  BOOST_TEST(chatd->running());
  alice->close_stdin();
  bob->close_stdin();
  BOOST_TEST(alice->exit_code(10s) == 0);
  BOOST_TEST(bob->exit_code(10s) == 0);
  stop_and_check_clean(*chatd, rt, {alice->pid(), bob->pid(), holder.pid()});
}

BOOST_DATA_TEST_CASE(hellos_past_max_clients_get_server_full, bdata::make(all_backends()),
                     transport) {
  TempRuntime rt;
  auto chatd = start_chatd(rt, transport, {"--max-clients=2"});
  auto a = start_chat(rt, "a");
  auto b = start_chat(rt, "b");
  auto c = start_chat(rt, "c", {}, false);
  BOOST_TEST(c->exit_code(10s) == 1);
  BOOST_TEST(c->err().find("server_full") != std::string::npos);
  // A slot freed is a slot usable again.
  b->close_stdin();
  BOOST_TEST(b->exit_code(10s) == 0);
  auto d = start_chat(rt, "d");
  d->close_stdin();
  BOOST_TEST(d->exit_code(10s) == 0);
  a->close_stdin();
  BOOST_TEST(a->exit_code(10s) == 0);
  stop_and_check_clean(*chatd, rt, {a->pid(), b->pid(), c->pid(), d->pid()});
}

BOOST_AUTO_TEST_SUITE_END()

// Included by exactly one file per test executable: the global fixture every test binary needs.
#pragma once

#include <boost/test/unit_test.hpp>

#include "transport/factory.hpp"

namespace chat::test {

// Blocks the transports' doorbell signals before Boost.Test or any test starts a thread.
struct PrepareProcess {
  PrepareProcess() { transport::prepare_process(); }
};
BOOST_TEST_GLOBAL_FIXTURE(PrepareProcess);

}  // namespace chat::test

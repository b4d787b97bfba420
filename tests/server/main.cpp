// The server_unit_test executable: defines the Boost.Test module and installs the global fixture.
#define BOOST_TEST_MODULE server_unit_test
#include <boost/test/unit_test.hpp>

#include "tests/support/main_fixture.hpp"

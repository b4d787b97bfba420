// The common_test executable: defines the Boost.Test module and installs the global fixture.
#define BOOST_TEST_MODULE common_test
#include <boost/test/unit_test.hpp>

#include "tests/support/main_fixture.hpp"

// The one Boost.Test main shared by every unit test binary.
#define BOOST_TEST_MODULE nixfleet
#include <boost/test/unit_test.hpp>

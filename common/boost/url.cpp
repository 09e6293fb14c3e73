// The one translation unit that compiles Boost.URL (Debian ships it header-only).
#include <boost/url/src.hpp>

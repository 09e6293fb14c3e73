// The one translation unit that compiles Boost.Asio's OpenSSL support.
#include <boost/asio/ssl/impl/src.hpp>

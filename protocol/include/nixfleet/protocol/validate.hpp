// Validators for every identifier that crosses the wire before it may reach argv, SQL or a path.
#pragma once

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <string_view>

namespace nixfleet::protocol {

// Each returns an empty error_code when `s` is acceptable.

// Machine ids, hostnames, release and rollout ids: [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
boost::system::error_code check_identifier(std::string_view s);
inline boost::system::error_code check_machine_id(std::string_view s) { return check_identifier(s); }

// Tags: like identifiers, at most 64 characters.
boost::system::error_code check_tag(std::string_view s);

// /nix/store/<32 nix-base32 chars>-<name>; name [A-Za-z0-9+._?=-]{1,211}, not starting with '.'.
boost::system::error_code check_store_path(std::string_view s);

// True for the 32 characters of Nix's base32 alphabet.
bool is_nix_base32(char c) noexcept;

// A binary cache URL as it travels over the network (release cache_urls): http, https, file, s3,
// ssh or ssh-ng; absolute; no whitespace; no query (Nix store parameters), fragment or user part.
boost::system::error_code check_cache_url(std::string_view s);

// A release's cache URL the agent will fetch from: check_cache_url, and http, https or s3 only.
boost::system::error_code check_fetchable_cache_url(std::string_view s);

// A cache in the host's own configuration: any of the schemes above, store parameters allowed
// except `trusted` (which would turn signature checks off).
boost::system::error_code check_local_cache_url(std::string_view s);

// An http(s) URL (coordinator address, probe targets).
boost::system::error_code check_http_url(std::string_view s);

// Printable text of at most `max` bytes: valid UTF-8, no control characters (tab allowed
// when `allow_newlines`, together with \n and \r).
enum class newlines { reject, allow };
boost::system::error_code check_text(std::string_view s, std::size_t max, newlines nl = newlines::reject);

// A Nix key or signature name (`cache.example.org-1`): [A-Za-z0-9._+-]{1,128}.
boost::system::error_code check_key_name(std::string_view s);

// `name:base64` of a 64-byte ed25519 signature.
boost::system::error_code check_signature_text(std::string_view s);

// A flake revision: 7 to 64 lowercase hex digits, optionally followed by "-dirty".
boost::system::error_code check_flake_rev(std::string_view s);

// A Nix system double such as x86_64-linux.
boost::system::error_code check_platform(std::string_view s);

// Valid UTF-8 (no overlongs, no surrogates).
bool is_valid_utf8(std::string_view s) noexcept;

// Makes any program output (a journal, a probe's stdout, a switch's stderr) into text that
// check_text accepts with newlines allowed, in at most `max` bytes: terminal escape sequences and
// carriage returns are dropped, other control characters become spaces, bytes that are not UTF-8
// become '?'. When it is longer, the end (`keep::tail`) or the start (`keep::head`) is kept, cut
// at a line (or at least a character) boundary and marked with "[…]".
// `pattern` with `*` (any run) and `?` (one character) matches the whole of `text`.
bool glob_match(std::string_view pattern, std::string_view text) noexcept;

enum class keep { head, tail };
std::string printable_excerpt(std::string_view raw, std::size_t max, keep part = keep::tail);

}  // namespace nixfleet::protocol

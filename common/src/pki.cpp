// X.509 over OpenSSL 3: keys, requests, the fleet CA's certificates and CRLs.
#include "nixfleet/common/pki.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace nixfleet::pki {
namespace {

template <class T, void (*F)(T*)>
struct deleter {
  void operator()(T* p) const noexcept { F(p); }
};
using bio_ptr = std::unique_ptr<BIO, deleter<BIO, BIO_free_all>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, deleter<EVP_PKEY, EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, deleter<X509, X509_free>>;
using req_ptr = std::unique_ptr<X509_REQ, deleter<X509_REQ, X509_REQ_free>>;
using crl_ptr = std::unique_ptr<X509_CRL, deleter<X509_CRL, X509_CRL_free>>;
using bn_ptr = std::unique_ptr<BIGNUM, deleter<BIGNUM, BN_free>>;
using asn1int_ptr = std::unique_ptr<ASN1_INTEGER, deleter<ASN1_INTEGER, ASN1_INTEGER_free>>;
using ext_ptr = std::unique_ptr<X509_EXTENSION, deleter<X509_EXTENSION, X509_EXTENSION_free>>;

// OpenSSL's reason for the last failure, clearing its queue.
std::string openssl_reason() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

[[noreturn]] void fail(const std::string& what) { throw error(what + ": " + openssl_reason()); }

bio_ptr mem_in(std::string_view text) {
  bio_ptr b(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!b) fail("cannot allocate a buffer");
  return b;
}

bio_ptr mem_out() {
  bio_ptr b(BIO_new(BIO_s_mem()));
  if (!b) fail("cannot allocate a buffer");
  return b;
}

std::string drain(BIO* b) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  return std::string(data, static_cast<std::size_t>(n));
}

pkey_ptr read_key(std::string_view pem) {
  auto b = mem_in(pem);
  pkey_ptr k(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
  if (!k) fail("not a private key");
  return k;
}

x509_ptr read_x509(std::string_view pem) {
  auto b = mem_in(pem);
  x509_ptr c(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
  return c;
}

std::string write_x509(X509* c) {
  auto b = mem_out();
  if (PEM_write_bio_X509(b.get(), c) != 1) fail("cannot write a certificate");
  return drain(b.get());
}

// ed25519 signs without a separate digest.
const EVP_MD* digest_for(EVP_PKEY* key) { return EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256(); }

void set_time(ASN1_TIME* t, time_point at) {
  if (ASN1_TIME_set(t, static_cast<time_t>(at.time_since_epoch().count())) == nullptr) fail("cannot set a time");
}

time_point get_time(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return {};
  return time_point(std::chrono::seconds(timegm(&tm)));
}

void set_serial(X509* x, std::string_view hex) {
  BIGNUM* raw = nullptr;
  const std::string s(hex);
  if (s.empty() || BN_hex2bn(&raw, s.c_str()) != static_cast<int>(s.size())) {
    BN_free(raw);
    throw error("not a hexadecimal serial: " + s);
  }
  bn_ptr bn(raw);
  if (BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x)) == nullptr) fail("cannot set a serial");
}

std::string serial_hex(const ASN1_INTEGER* i) {
  bn_ptr bn(ASN1_INTEGER_to_BN(i, nullptr));
  if (!bn) return {};
  char* hex = BN_bn2hex(bn.get());
  std::string out(hex ? hex : "");
  OPENSSL_free(hex);
  for (auto& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const auto nz = out.find_first_not_of('0');
  return nz == std::string::npos ? "0" : out.substr(nz);
}

void add_ext(X509* x, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  ext_ptr e(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!e || X509_add_ext(x, e.get(), -1) != 1) fail(std::string("cannot add the extension ") + OBJ_nid2sn(nid));
}

void add_cn(X509_NAME* name, std::string_view cn) {
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.data()),
                                 static_cast<int>(cn.size()), -1, 0) != 1)
    fail("cannot set a CN");
}

// The SAN of a client (one URI) or a server (DNS names and IP literals), built without a
// configuration string so that no name is ever parsed as configuration.
void add_san(X509* x, const std::vector<std::pair<int, std::string>>& names) {
  GENERAL_NAMES* gens = sk_GENERAL_NAME_new_null();
  for (const auto& [type, value] : names) {
    GENERAL_NAME* g = nullptr;
    if (type == GEN_IPADD) {
      ASN1_OCTET_STRING* ip = a2i_IPADDRESS(value.c_str());
      if (ip == nullptr) {
        GENERAL_NAMES_free(gens);
        throw error("not an IP address: " + value);
      }
      g = GENERAL_NAME_new();
      GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
    } else {
      ASN1_IA5STRING* s = ASN1_IA5STRING_new();
      ASN1_STRING_set(s, value.data(), static_cast<int>(value.size()));
      g = GENERAL_NAME_new();
      GENERAL_NAME_set0_value(g, type, s);
    }
    sk_GENERAL_NAME_push(gens, g);
  }
  const int ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0);
  GENERAL_NAMES_free(gens);
  if (ok != 1) fail("cannot add the subject alternative names");
}

std::string cn_of(const X509_NAME* name, int* count = nullptr) {
  std::string out;
  int n = 0;
  for (int i = -1; (i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >= 0;) {
    ++n;
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    unsigned char* utf8 = nullptr;
    const int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len >= 0 && n == 1) out.assign(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
    OPENSSL_free(utf8);
  }
  if (count) *count = n;
  return out;
}

std::string public_key_pem(EVP_PKEY* k) {
  auto b = mem_out();
  if (PEM_write_bio_PUBKEY(b.get(), k) != 1) fail("cannot write a public key");
  return drain(b.get());
}

// Keys we sign for: modern curves, or RSA that is not weak.
std::string key_problem(EVP_PKEY* k) {
  switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_ED25519: return {};
    case EVP_PKEY_RSA: return EVP_PKEY_get_bits(k) >= 2048 ? "" : "an RSA key shorter than 2048 bits";
    case EVP_PKEY_EC: {
      char curve[64] = {0};
      std::size_t len = 0;
      if (EVP_PKEY_get_utf8_string_param(k, "group", curve, sizeof curve, &len) != 1) return "an EC key without a named curve";
      const std::string c(curve, len);
      return c == "prime256v1" || c == "P-256" || c == "secp384r1" || c == "P-384" ? "" : "an EC key on curve " + c;
    }
    default: return "a key of an unsupported type";
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Creates `path` with `mode`, refusing to replace a file, and writes `text` durably.
void write_new(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) throw error("cannot create " + path + ": " + std::strerror(errno));
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      throw error("cannot write " + path + ": " + std::strerror(e));
    }
    done += static_cast<std::size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) throw error("cannot write " + path + ": " + std::strerror(errno));
}

}  // namespace

std::string generate_key(key_type type) {
  pkey_ptr k(type == key_type::ed25519 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                                       : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!k) fail("cannot generate a key");
  auto b = mem_out();
  if (PEM_write_bio_PrivateKey(b.get(), k.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) fail("cannot write a key");
  return drain(b.get());
}

std::string make_csr(std::string_view key_pem, std::string_view cn) {
  auto key = read_key(key_pem);
  req_ptr req(X509_REQ_new());
  if (!req) fail("cannot allocate a request");
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  add_cn(name, cn);
  if (X509_REQ_set_pubkey(req.get(), key.get()) != 1) fail("cannot set the request's key");
  if (X509_REQ_sign(req.get(), key.get(), digest_for(key.get())) <= 0) fail("cannot sign the request");
  auto b = mem_out();
  if (PEM_write_bio_X509_REQ(b.get(), req.get()) != 1) fail("cannot write the request");
  return drain(b.get());
}

std::optional<csr_info> read_csr(std::string_view pem, std::string* why) {
  auto say = [&](std::string w) -> std::optional<csr_info> {
    ERR_clear_error();
    if (why) *why = std::move(w);
    return std::nullopt;
  };
  if (pem.size() > 64 * 1024) return say("the request is larger than 64 KiB");
  auto b = mem_in(pem);
  req_ptr req(PEM_read_bio_X509_REQ(b.get(), nullptr, nullptr, nullptr));
  if (!req) return say("not a PEM certificate signing request");
  EVP_PKEY* key = X509_REQ_get0_pubkey(req.get());
  if (key == nullptr) return say("the request carries no public key");
  if (auto p = key_problem(key); !p.empty()) return say("the request's key is " + p);
  if (X509_REQ_verify(req.get(), key) != 1) return say("the request's signature does not verify with its own key");
  int cns = 0;
  csr_info out;
  out.cn = cn_of(X509_REQ_get_subject_name(req.get()), &cns);
  if (cns > 1) return say("the request's subject has " + std::to_string(cns) + " CNs");
  out.public_key_pem = public_key_pem(key);
  return out;
}

std::optional<certificate_info> read_certificate(std::string_view pem, std::string* why) {
  auto c = read_x509(pem);
  if (!c) {
    ERR_clear_error();
    if (why) *why = "not a PEM certificate";
    return std::nullopt;
  }
  certificate_info out;
  out.serial = serial_hex(X509_get0_serialNumber(c.get()));
  out.subject_cn = cn_of(X509_get_subject_name(c.get()));
  out.issuer_cn = cn_of(X509_get_issuer_name(c.get()));
  out.not_before = get_time(X509_get0_notBefore(c.get()));
  out.not_after = get_time(X509_get0_notAfter(c.get()));
  if (auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(c.get(), NID_subject_alt_name, nullptr, nullptr))) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
      if (g->type != GEN_URI) continue;
      const auto* s = g->d.uniformResourceIdentifier;
      out.uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                            static_cast<std::size_t>(ASN1_STRING_length(s)));
    }
    GENERAL_NAMES_free(names);
  }
  return out;
}

bool key_matches(std::string_view key_pem, std::string_view cert_pem) {
  auto kb = mem_in(key_pem);
  pkey_ptr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  auto cert = read_x509(cert_pem);
  const bool ok = key && cert && X509_check_private_key(cert.get(), key.get()) == 1;
  ERR_clear_error();
  return ok;
}

std::string random_serial() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) fail("no randomness for a serial");
  bytes[0] = static_cast<unsigned char>((bytes[0] & 0x7f) | 0x10);  // positive, and 16 bytes long in hex
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

namespace {
struct authority_state {
  x509_ptr cert;
  pkey_ptr key;
  std::string chain;
  certificate_info about;
};
}  // namespace

struct authority::impl : authority_state {};

authority::authority() : impl_(std::make_unique<impl>()) {}
authority::~authority() = default;
authority::authority(authority&&) noexcept = default;
authority& authority::operator=(authority&&) noexcept = default;

authority authority::from_pem(std::string_view chain_pem, std::string_view key_pem) {
  authority a;
  a.impl_->cert = read_x509(chain_pem);
  if (!a.impl_->cert) fail("the CA certificate is not a PEM certificate");
  a.impl_->key = read_key(key_pem);
  if (X509_check_private_key(a.impl_->cert.get(), a.impl_->key.get()) != 1)
    fail("the CA key does not belong to the CA certificate");
  if (X509_check_ca(a.impl_->cert.get()) == 0) throw error("the CA certificate is not a CA (basicConstraints CA:FALSE)");
  a.impl_->chain = std::string(chain_pem);
  a.impl_->about = *read_certificate(chain_pem);
  return a;
}

authority authority::load(const std::string& cert_file, const std::string& key_file) {
  const auto chain = read_file(cert_file);
  const auto key = read_file(key_file);
  try {
    return from_pem(chain, key);
  } catch (const error& e) {
    throw error(cert_file + " / " + key_file + ": " + e.what());
  }
}

namespace {

// A leaf certificate over `key` named `cn`, issued by this CA, with what every leaf carries; the
// caller adds its usage and names.
x509_ptr leaf(const authority_state& ca, EVP_PKEY* key, std::string_view cn, std::string_view serial,
              time_point not_before, time_point not_after) {
  x509_ptr x(X509_new());
  if (!x) fail("cannot allocate a certificate");
  X509_set_version(x.get(), 2);
  set_serial(x.get(), serial);
  set_time(X509_getm_notBefore(x.get()), not_before);
  set_time(X509_getm_notAfter(x.get()), not_after);
  X509_set_pubkey(x.get(), key);
  add_cn(X509_get_subject_name(x.get()), cn);
  X509_set_issuer_name(x.get(), X509_get_subject_name(ca.cert.get()));
  add_ext(x.get(), ca.cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_ext(x.get(), ca.cert.get(), NID_subject_key_identifier, "hash");
  add_ext(x.get(), ca.cert.get(), NID_authority_key_identifier, "keyid");
  return x;
}

std::string sign(const authority_state& ca, X509* x) {
  if (X509_sign(x, ca.key.get(), digest_for(ca.key.get())) <= 0) fail("cannot sign the certificate");
  return write_x509(x);
}

}  // namespace

std::string authority::issue_client(const csr_info& req, std::string_view machine_id, std::string_view serial,
                                    time_point not_before, time_point not_after) const {
  auto kb = mem_in(req.public_key_pem);
  pkey_ptr pub(PEM_read_bio_PUBKEY(kb.get(), nullptr, nullptr, nullptr));
  if (!pub) fail("the request's key cannot be read back");
  auto x = leaf(*impl_, pub.get(), machine_id, serial, not_before, not_after);
  add_ext(x.get(), impl_->cert.get(), NID_key_usage, "critical,digitalSignature");
  add_ext(x.get(), impl_->cert.get(), NID_ext_key_usage, "clientAuth");
  add_san(x.get(), {{GEN_URI, "nixfleet://machine/" + std::string(machine_id)}});
  return sign(*impl_, x.get());
}

std::string authority::issue_server(std::string_view key_pem, const std::vector<std::string>& names,
                                    std::string_view serial, time_point not_before, time_point not_after) const {
  if (names.empty()) throw error("a server certificate needs at least one name");
  auto key = read_key(key_pem);
  auto x = leaf(*impl_, key.get(), names.front(), serial, not_before, not_after);
  add_ext(x.get(), impl_->cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_ext(x.get(), impl_->cert.get(), NID_ext_key_usage, "serverAuth");
  std::vector<std::pair<int, std::string>> san;
  for (const auto& n : names) {
    ASN1_OCTET_STRING* ip = a2i_IPADDRESS(n.c_str());
    ERR_clear_error();
    san.emplace_back(ip ? GEN_IPADD : GEN_DNS, n);
    ASN1_OCTET_STRING_free(ip);
  }
  add_san(x.get(), san);
  return sign(*impl_, x.get());
}

std::string authority::crl(const std::vector<revoked_certificate>& revoked, std::uint64_t number,
                           time_point this_update, time_point next_update) const {
  crl_ptr c(X509_CRL_new());
  if (!c) fail("cannot allocate a CRL");
  X509_CRL_set_version(c.get(), 1);  // v2
  X509_CRL_set_issuer_name(c.get(), X509_get_subject_name(impl_->cert.get()));
  std::unique_ptr<ASN1_TIME, deleter<ASN1_TIME, ASN1_TIME_free>> t(ASN1_TIME_new());
  set_time(t.get(), this_update);
  X509_CRL_set1_lastUpdate(c.get(), t.get());
  set_time(t.get(), next_update);
  X509_CRL_set1_nextUpdate(c.get(), t.get());
  for (const auto& r : revoked) {
    X509_REVOKED* entry = X509_REVOKED_new();
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, r.serial.c_str()) != static_cast<int>(r.serial.size())) {
      BN_free(raw);
      X509_REVOKED_free(entry);
      throw error("not a hexadecimal serial: " + r.serial);
    }
    bn_ptr bn(raw);
    asn1int_ptr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    X509_REVOKED_set_serialNumber(entry, serial.get());
    set_time(t.get(), r.at);
    X509_REVOKED_set_revocationDate(entry, t.get());
    X509_CRL_add0_revoked(c.get(), entry);
  }
  asn1int_ptr n(ASN1_INTEGER_new());
  ASN1_INTEGER_set_uint64(n.get(), number);
  X509_CRL_add1_ext_i2d(c.get(), NID_crl_number, n.get(), 0, 0);
  X509_CRL_sort(c.get());
  if (X509_CRL_sign(c.get(), impl_->key.get(), digest_for(impl_->key.get())) <= 0) fail("cannot sign the CRL");
  auto b = mem_out();
  if (PEM_write_bio_X509_CRL(b.get(), c.get()) != 1) fail("cannot write the CRL");
  return drain(b.get());
}

const std::string& authority::chain_pem() const noexcept { return impl_->chain; }
const certificate_info& authority::info() const noexcept { return impl_->about; }

ca_files init_authority(const std::string& dir, key_type type, std::string_view name, bool intermediate,
                        std::chrono::seconds lifetime, time_point now) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw error("cannot create " + dir + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  ca_files out{dir + "/ca.key", dir + "/ca.crt", dir + "/ca.csr"};
  for (const auto& f : {out.key_file, out.cert_file, out.csr_file})
    if (std::filesystem::exists(f)) throw error(f + " exists: a CA is never replaced in place");
  const auto key_pem = generate_key(type);
  auto key = read_key(key_pem);
  if (intermediate) {
    req_ptr req(X509_REQ_new());
    X509_REQ_set_version(req.get(), 0);
    add_cn(X509_REQ_get_subject_name(req.get()), name);
    X509_REQ_set_pubkey(req.get(), key.get());
    // The extensions a CA needs, asked for in the request: the operator's CA may copy them.
    STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, nullptr, nullptr, req.get(), nullptr, 0);
    sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
    sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(nullptr, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
    X509_REQ_add_extensions(req.get(), exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (X509_REQ_sign(req.get(), key.get(), digest_for(key.get())) <= 0) fail("cannot sign the request");
    auto b = mem_out();
    PEM_write_bio_X509_REQ(b.get(), req.get());
    write_new(out.key_file, key_pem, 0600);
    write_new(out.csr_file, drain(b.get()), 0644);
    out.cert_file.clear();
    return out;
  }
  x509_ptr x(X509_new());
  X509_set_version(x.get(), 2);
  set_serial(x.get(), random_serial());
  set_time(X509_getm_notBefore(x.get()), now - std::chrono::minutes(5));
  set_time(X509_getm_notAfter(x.get()), now + lifetime);
  X509_set_pubkey(x.get(), key.get());
  add_cn(X509_get_subject_name(x.get()), name);
  X509_set_issuer_name(x.get(), X509_get_subject_name(x.get()));
  add_ext(x.get(), x.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_ext(x.get(), x.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(x.get(), x.get(), NID_subject_key_identifier, "hash");
  if (X509_sign(x.get(), key.get(), digest_for(key.get())) <= 0) fail("cannot sign the CA certificate");
  write_new(out.key_file, key_pem, 0600);
  write_new(out.cert_file, write_x509(x.get()), 0644);
  out.csr_file.clear();
  return out;
}

}  // namespace nixfleet::pki

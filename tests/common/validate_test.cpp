// Names, message text and terminal sanitising (common/validate.hpp).
#include "common/validate.hpp"

#include <boost/test/unit_test.hpp>
#include <cstring>
#include <ostream>
#include <random>

#include "common/limits.hpp"

namespace chat {

// For Boost.Test's messages (found by argument-dependent lookup).
std::ostream& operator<<(std::ostream& os, TextError e) {
  return os << static_cast<int>(e);
}

BOOST_AUTO_TEST_SUITE(validate)

BOOST_AUTO_TEST_CASE(name_lengths) {
  BOOST_TEST(!is_valid_name(""));
  BOOST_TEST(is_valid_name("a"));
  BOOST_TEST(is_valid_name(std::string(kMaxNameBytes, 'a')));
  BOOST_TEST(!is_valid_name(std::string(kMaxNameBytes + 1, 'a')));
}

BOOST_AUTO_TEST_CASE(name_characters) {
  for (const char* ok : {"ABCXYZ", "abcxyz", "0123456789", "_", "-", ".", "a.b-c_d", "..", "9"}) {
    BOOST_TEST(is_valid_name(ok), ok);
  }
  for (const char* bad : {"a b", "a/b", "/", "a\\b", "a:b", "a@b", "a#b", "a\tb", "a\nb", "a+b",
                          "caf\xC3\xA9", "\xE2\x9C\x93", "a\x7F", "a\x1B"}) {
    BOOST_TEST(!is_valid_name(bad), bad);
  }
  BOOST_TEST(!is_valid_name(std::string("a\0b", 3)));
  // Every byte outside the allowed classes is refused.
  for (int c = 0; c < 256; ++c) {
    const char ch = static_cast<char>(c);
    const bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    BOOST_TEST(is_valid_name(std::string(1, ch)) == allowed, "byte " << c);
  }
}

BOOST_AUTO_TEST_CASE(fold_name_is_ascii_lower_case) {
  BOOST_TEST(fold_name("Alice") == "alice");
  BOOST_TEST(fold_name("ALICE_01.-x") == "alice_01.-x");
  BOOST_TEST(fold_name("alice") == fold_name("aLiCe"));
  BOOST_TEST(fold_name("") == "");
  BOOST_TEST(fold_name("[]@") == "[]@");  // neighbours of A-Z stay as they are
}

BOOST_AUTO_TEST_CASE(text_length) {
  BOOST_TEST(check_text("") == TextError::kEmpty);
  BOOST_TEST(check_text("a") == TextError::kNone);
  BOOST_TEST(check_text(std::string(kMaxTextBytes, 'a')) == TextError::kNone);
  BOOST_TEST(check_text(std::string(kMaxTextBytes + 1, 'a')) == TextError::kTooLong);
  // The limit is in bytes, not characters: 1334 three-byte characters = 4002 bytes.
  std::string checks;
  for (int i = 0; i < 1334; ++i) checks += "\xE2\x9C\x93";
  BOOST_TEST(check_text(checks) == TextError::kTooLong);
  checks.resize(1333 * 3);
  BOOST_TEST(check_text(checks) == TextError::kNone);
}

BOOST_AUTO_TEST_CASE(text_controls) {
  BOOST_TEST(check_text("a\tb") == TextError::kNone);
  for (const char* bad : {"a\nb", "a\rb", "\x1b[2J", "a\x7F", "\x01", "a\xC2\x85x", "\xC2\x9F"}) {
    BOOST_TEST(check_text(bad) == TextError::kControl, bad);
  }
  BOOST_TEST(check_text(std::string("a\0b", 3)) == TextError::kControl);
  BOOST_TEST(check_text("\xC2\xA0") == TextError::kNone);  // U+00A0 is past C1
}

BOOST_AUTO_TEST_CASE(text_utf8) {
  BOOST_TEST(check_text("h\xC3\xA9llo \xE2\x9C\x93 \xF0\x9F\x98\x80") == TextError::kNone);
  BOOST_TEST(check_text("\xF4\x8F\xBF\xBF") == TextError::kNone);  // U+10FFFF
  BOOST_TEST(check_text("\xED\x9F\xBF") == TextError::kNone);      // U+D7FF
  for (const char* bad : {
           "\x80",                  // lone continuation byte
           "a\xBFx",                // another one, mid-text
           "\xC0\xAF",              // overlong '/'
           "\xE0\x80\xAF",          // overlong, 3 bytes
           "\xF0\x80\x80\xAF",      // overlong, 4 bytes
           "\xED\xA0\x80",          // surrogate U+D800
           "\xED\xBF\xBF",          // surrogate U+DFFF
           "\xF4\x90\x80\x80",      // U+110000
           "\xF8\x88\x80\x80\x80",  // 5-byte form
           "\xFF",                  // never valid
           "\xC3",                  // truncated at the end: 2 bytes
           "\xE2\x9C",              // 3 bytes
           "\xF0\x9F\x98",          // 4 bytes
           "\xE2\x9Cx",             // truncated mid-text
       }) {
    BOOST_TEST(check_text(bad) == TextError::kBadUtf8, "bad text of " << std::strlen(bad));
    BOOST_TEST(!is_valid_utf8(bad));
  }
  BOOST_TEST(is_valid_utf8(""));
  BOOST_TEST(is_valid_utf8("a\nb\x1b"));  // controls are valid UTF-8
}

BOOST_AUTO_TEST_CASE(text_error_codes) {
  BOOST_TEST(text_error_code(TextError::kNone) == "");
  BOOST_TEST(text_error_code(TextError::kTooLong) == "too_long");
  BOOST_TEST(text_error_code(TextError::kEmpty) == "bad_text");
  BOOST_TEST(text_error_code(TextError::kBadUtf8) == "bad_text");
  BOOST_TEST(text_error_code(TextError::kControl) == "bad_text");
  for (auto e :
       {TextError::kEmpty, TextError::kTooLong, TextError::kBadUtf8, TextError::kControl}) {
    BOOST_TEST(!text_error_message(e).empty());
  }
}

BOOST_AUTO_TEST_CASE(sanitize_neutralises_escape_sequences) {
  const std::string out = sanitize_for_terminal("before\x1b[2Jafter");
  BOOST_TEST(out.find('\x1b') == std::string::npos);
  BOOST_TEST(out.find("\x1b[2J") == std::string::npos);
  BOOST_TEST(out == "before^[[2Jafter");
  BOOST_TEST(sanitize_for_terminal("a\nb\rc\x7F") == "a^Jb^Mc^?");
  BOOST_TEST(sanitize_for_terminal("a\tb") == "a b");
  BOOST_TEST(sanitize_for_terminal("\xC2\x9B[2J") == "\xEF\xBF\xBD[2J");  // C1 CSI
  BOOST_TEST(sanitize_for_terminal("a\xFFz") == "a\xEF\xBF\xBDz");
  BOOST_TEST(sanitize_for_terminal("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD");
}

BOOST_AUTO_TEST_CASE(sanitize_keeps_valid_text) {
  for (const char* s : {"h\xC3\xA9llo \xE2\x9C\x93", "plain", "", "\xF0\x9F\x98\x80", "\xC2\xA0"}) {
    BOOST_TEST(sanitize_for_terminal(s) == s);
  }
}

BOOST_AUTO_TEST_CASE(sanitized_random_bytes_are_printable_utf8) {
  std::mt19937 rng(99);
  for (int i = 0; i < 5000; ++i) {
    std::string s(1 + rng() % 60, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    const std::string out = sanitize_for_terminal(s);
    BOOST_TEST_REQUIRE(check_text(out) == TextError::kNone, "sanitized input #" << i);
  }
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace chat

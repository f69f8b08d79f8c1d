// A small JSON reader (RFC 8259) for manifest.json: enough to read what Python's json.dumps
// writes, exactly, and to say where a malformed file goes wrong.
//
//   Value v = json::parse(text);              // throws json::ParseError("line 3, column 14: ...")
//   double a = v.at("schedule").at("alphas_cumprod").items()[0].number();
//
// Numbers are read with std::from_chars, which is locale-independent and correctly rounded, so
// every float64 Python wrote (repr: shortest round-trip digits) reads back to the same double.
// Objects keep their members in file order; a repeated key keeps its last value, as in Python.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vmddpm::host::json {

class ParseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Raised by the accessors when a value has another type or a key is missing; the message names
// the JSON path ("schedule.alphas_cumprod[3]") so a reader can say which field is wrong.
class TypeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Value {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  using Member = std::pair<std::string, Value>;

  Value() = default;
  static Value null() { return Value(); }
  static Value boolean(bool value);
  static Value number(double value, bool integral, int64_t integer);
  static Value string(std::string value);
  static Value array(std::vector<Value> items);
  static Value object(std::vector<Member> members);

  Type type() const { return type_; }
  const std::string& path() const { return path_; }
  bool is_null() const { return type_ == Type::kNull; }

  bool as_bool() const;
  double as_double() const;
  // A number written without fraction or exponent that fits in int64.
  int64_t as_int() const;
  const std::string& as_string() const;
  const std::vector<Value>& items() const;
  const std::vector<Member>& members() const;

  // Object access: find() returns nullptr for a missing key, at() throws TypeError.
  const Value* find(std::string_view key) const;
  const Value& at(std::string_view key) const;

 private:
  friend class Parser;
  [[noreturn]] void type_error(const char* expected) const;

  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  bool integral_ = false;
  int64_t integer_ = 0;
  std::string string_;
  std::vector<Value> items_;
  std::vector<Member> members_;
  std::string path_;  // where this value sits in the document, for error messages
};

// Parse a whole document; trailing non-whitespace is an error. Nesting deeper than 128 levels
// is refused rather than risking the stack.
Value parse(std::string_view text);

}  // namespace vmddpm::host::json

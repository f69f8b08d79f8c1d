#include "json.h"

#include <charconv>
#include <cmath>

namespace vmddpm::host::json {

Value Value::boolean(bool value) {
  Value v;
  v.type_ = Type::kBool;
  v.bool_ = value;
  return v;
}

Value Value::number(double value, bool integral, int64_t integer) {
  Value v;
  v.type_ = Type::kNumber;
  v.number_ = value;
  v.integral_ = integral;
  v.integer_ = integer;
  return v;
}

Value Value::string(std::string value) {
  Value v;
  v.type_ = Type::kString;
  v.string_ = std::move(value);
  return v;
}

Value Value::array(std::vector<Value> items) {
  Value v;
  v.type_ = Type::kArray;
  v.items_ = std::move(items);
  return v;
}

Value Value::object(std::vector<Member> members) {
  Value v;
  v.type_ = Type::kObject;
  v.members_ = std::move(members);
  return v;
}

void Value::type_error(const char* expected) const {
  static const char* const names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
  const std::string where = path_.empty() ? "the document" : path_;
  throw TypeError(where + " must be " + expected + ", found " + names[static_cast<int>(type_)]);
}

bool Value::as_bool() const {
  if (type_ != Type::kBool) type_error("a boolean");
  return bool_;
}

double Value::as_double() const {
  if (type_ != Type::kNumber) type_error("a number");
  return number_;
}

int64_t Value::as_int() const {
  if (type_ != Type::kNumber || !integral_) type_error("an integer");
  return integer_;
}

const std::string& Value::as_string() const {
  if (type_ != Type::kString) type_error("a string");
  return string_;
}

const std::vector<Value>& Value::items() const {
  if (type_ != Type::kArray) type_error("an array");
  return items_;
}

const std::vector<Value::Member>& Value::members() const {
  if (type_ != Type::kObject) type_error("an object");
  return members_;
}

const Value* Value::find(std::string_view key) const {
  const auto& all = members();
  // Last one wins for repeated keys, as in Python's json.
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->first == key) return &it->second;
  }
  return nullptr;
}

const Value& Value::at(std::string_view key) const {
  const Value* value = find(key);
  if (value == nullptr) {
    throw TypeError((path_.empty() ? std::string("the document") : path_) + " has no member \"" + std::string(key) + "\"");
  }
  return *value;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Value document() {
    skip_whitespace();
    Value value = parse_value("", 0);
    skip_whitespace();
    if (pos_ != text_.size()) fail("unexpected text after the JSON value");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 128;

  [[noreturn]] void fail(const std::string& what) const {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    throw ParseError("line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + what);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_whitespace() {
    while (!at_end() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) ++pos_;
  }

  void expect_literal(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) fail("invalid literal (expected " + std::string(literal) + ")");
    pos_ += literal.size();
  }

  Value with_path(Value value, const std::string& path) {
    value.path_ = path;
    return value;
  }

  Value parse_value(const std::string& path, int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than 128 levels");
    switch (peek()) {
      case '{': return with_path(parse_object(path, depth), path);
      case '[': return with_path(parse_array(path, depth), path);
      case '"': return with_path(Value::string(parse_string()), path);
      case 't': expect_literal("true"); return with_path(Value::boolean(true), path);
      case 'f': expect_literal("false"); return with_path(Value::boolean(false), path);
      case 'n': expect_literal("null"); return with_path(Value::null(), path);
      case '\0':
        if (at_end()) fail("unexpected end of input, expected a value");
        [[fallthrough]];
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return with_path(parse_number(), path);
        fail(std::string("unexpected character '") + peek() + "', expected a value");
    }
  }

  Value parse_object(const std::string& path, int depth) {
    ++pos_;  // '{'
    std::vector<Value::Member> members;
    skip_whitespace();
    if (peek() == '}') {
      ++pos_;
      return Value::object(std::move(members));
    }
    while (true) {
      skip_whitespace();
      if (peek() != '"') fail("expected a string key");
      std::string key = parse_string();
      skip_whitespace();
      if (peek() != ':') fail("expected ':' after an object key");
      ++pos_;
      skip_whitespace();
      const std::string child = path.empty() ? key : path + "." + key;
      members.emplace_back(key, parse_value(child, depth + 1));
      skip_whitespace();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return Value::object(std::move(members));
      }
      fail("expected ',' or '}' after an object member");
    }
  }

  Value parse_array(const std::string& path, int depth) {
    ++pos_;  // '['
    std::vector<Value> items;
    skip_whitespace();
    if (peek() == ']') {
      ++pos_;
      return Value::array(std::move(items));
    }
    while (true) {
      skip_whitespace();
      items.push_back(parse_value(path + "[" + std::to_string(items.size()) + "]", depth + 1));
      skip_whitespace();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return Value::array(std::move(items));
      }
      fail("expected ',' or ']' after an array element");
    }
  }

  unsigned hex4() {
    if (pos_ + 4 > text_.size()) fail("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      code <<= 4;
      if (c >= '0' && c <= '9') code |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') code |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') code |= static_cast<unsigned>(c - 'A' + 10);
      else fail("invalid hex digit in \\u escape");
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (at_end()) fail("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) {
        --pos_;
        fail("control character in a string (escape it)");
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) fail("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = hex4();
          if (code >= 0xD800 && code <= 0xDBFF) {
            // A high surrogate must be followed by an escaped low surrogate (Python writes
            // non-BMP characters that way with ensure_ascii).
            if (text_.substr(pos_, 2) != "\\u") fail("unpaired surrogate in \\u escape");
            pos_ += 2;
            const unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("unpaired surrogate in \\u escape");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else if (code >= 0xDC00 && code <= 0xDFFF) {
            fail("unpaired surrogate in \\u escape");
          }
          append_utf8(out, code);
          break;
        }
        default:
          --pos_;
          fail(std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  Value parse_number() {
    const size_t start = pos_;
    bool integral = true;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      fail("invalid number");
    }
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("invalid number (digit expected after '.')");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("invalid number (digit expected in exponent)");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    double value = 0.0;
    const auto parsed = std::from_chars(first, last, value);
    if (parsed.ec == std::errc::result_out_of_range || !std::isfinite(value)) {
      pos_ = start;
      fail("number out of range for a float64");
    }
    int64_t integer = 0;
    if (integral) {
      const auto as_int = std::from_chars(first, last, integer);
      integral = as_int.ec == std::errc() && as_int.ptr == last;
    }
    return Value::number(value, integral, integer);
  }

  std::string_view text_;
  size_t pos_ = 0;
};

Value parse(std::string_view text) { return Parser(text).document(); }

}  // namespace vmddpm::host::json

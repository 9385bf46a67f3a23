// PyTorch checkpoints in the zip format of torch.save (since 1.6): <prefix>/data.pkl holds the
// pickled object, <prefix>/data/<key> the raw storages (STORED entries, ZIP64 when large).
// data.pkl is read by a restricted unpickler that only builds plain values (None, bools, ints,
// floats, strings, bytes, tuples, lists, dicts) and tensor descriptors; globals outside a small
// allow-list are refused by name, and no global is ever called -- the allowed ones are
// interpreted here.
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <unordered_map>

#include "engine/checkpoint_io.h"
#include "engine/error.h"

namespace hr::io {
namespace {

// ---------------------------------------------------------------- CRC-32 (zip), slice-by-8
struct Crc32Table {
  uint32_t t[8][256];
  Crc32Table() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
  }
};

uint32_t crc32(const uint8_t* p, size_t n) {
  static const Crc32Table tab;
  const auto& t = tab.t;
  uint32_t c = 0xFFFFFFFFu;
  for (; n >= 8; p += 8, n -= 8) {
    uint32_t a = (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24) ^ c;
    uint32_t b = uint32_t(p[4]) | uint32_t(p[5]) << 8 | uint32_t(p[6]) << 16 | uint32_t(p[7]) << 24;
    c = t[7][a & 0xFF] ^ t[6][(a >> 8) & 0xFF] ^ t[5][(a >> 16) & 0xFF] ^ t[4][a >> 24] ^
        t[3][b & 0xFF] ^ t[2][(b >> 8) & 0xFF] ^ t[1][(b >> 16) & 0xFF] ^ t[0][b >> 24];
  }
  for (; n > 0; ++p, --n) c = t[0][(c ^ *p) & 0xFF] ^ (c >> 8);
  return ~c;
}

// ---------------------------------------------------------------- zip central directory
uint64_t le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

struct ZipEntry {
  uint64_t offset = 0;  // of the data, from the file start
  uint64_t size = 0;
  uint32_t crc = 0;
};

class Zip {
 public:
  Zip(const uint8_t* d, size_t n, const std::string& path) : d_(d), n_(n), path_(path) {
    if (n >= 1 && d[0] == 0x80)
      fail("legacy torch.save format (before torch 1.6, not a zip archive) is not supported; "
           "re-save it with a newer torch");
    if (n < 22 || le(d, 4) != 0x04034b50) fail("not a zip archive (the torch.save format since 1.6)");
    size_t eocd = SIZE_MAX;
    size_t lowest = n - 22 > 65535 ? n - 22 - 65535 : 0;
    for (size_t p = n - 22 + 1; p-- > lowest;)
      if (le(d + p, 4) == 0x06054b50 && p + 22 + le(d + p + 20, 2) <= n) {
        eocd = p;
        break;
      }
    if (eocd == SIZE_MAX) fail("no zip end-of-central-directory record (file truncated?)");
    uint64_t count = le(d + eocd + 10, 2), cd_size = le(d + eocd + 12, 4), cd_off = le(d + eocd + 16, 4);
    if (eocd >= 20 && le(d + eocd - 20, 4) == 0x07064b50) {
      uint64_t z = le(d + eocd - 20 + 8, 8);
      if (z > n || n - z < 56 || le(d + z, 4) != 0x06064b50) fail("bad ZIP64 end-of-central-directory record");
      count = le(d + z + 32, 8);
      cd_size = le(d + z + 40, 8);
      cd_off = le(d + z + 48, 8);
    }
    if (cd_off > n || cd_size > n - cd_off) fail("zip central directory lies outside the file (truncated?)");
    uint64_t p = cd_off;
    for (uint64_t i = 0; i < count; ++i) {
      if (cd_off + cd_size - p < 46 || le(d + p, 4) != 0x02014b50) fail(str_cat("bad zip central directory entry ", i));
      uint64_t flags = le(d + p + 8, 2), method = le(d + p + 10, 2);
      uint32_t crc = static_cast<uint32_t>(le(d + p + 16, 4));
      uint64_t csize = le(d + p + 20, 4), usize = le(d + p + 24, 4);
      uint64_t nlen = le(d + p + 28, 2), xlen = le(d + p + 30, 2), clen = le(d + p + 32, 2);
      uint64_t local = le(d + p + 42, 4);
      if (cd_off + cd_size - p - 46 < nlen + xlen + clen) fail(str_cat("bad zip central directory entry ", i));
      std::string name(reinterpret_cast<const char*>(d + p + 46), nlen);
      for (const uint8_t *x = d + p + 46 + nlen, *xe = x + xlen; xe - x >= 4;) {
        uint64_t id = le(x, 2), len = le(x + 2, 2);
        if (static_cast<uint64_t>(xe - x - 4) < len) break;
        if (id == 0x0001) {  // ZIP64: the fields that overflowed, in this order
          const uint8_t* f = x + 4;
          uint64_t left = len;
          auto take = [&](uint64_t& v) {
            if (left < 8) fail("zip entry '" + name + "': short ZIP64 extra field");
            v = le(f, 8);
            f += 8;
            left -= 8;
          };
          if (usize == 0xFFFFFFFFu) take(usize);
          if (csize == 0xFFFFFFFFu) take(csize);
          if (local == 0xFFFFFFFFu) take(local);
        }
        x += 4 + len;
      }
      p += 46 + nlen + xlen + clen;
      if (flags & 1) fail("zip entry '" + name + "' is encrypted");
      if (method != 0)
        fail(str_cat("zip entry '", name, "' is compressed (method ", method,
                     "); torch.save writes uncompressed (STORED) entries"));
      if (csize != usize) fail("zip entry '" + name + "': stored size differs from its size");
      if (local > n || n - local < 30 || le(d + local, 4) != 0x04034b50)
        fail("zip entry '" + name + "': bad local header (file truncated?)");
      uint64_t data = local + 30 + le(d + local + 26, 2) + le(d + local + 28, 2);
      if (data > n || usize > n - data) fail("zip entry '" + name + "' runs past the end of the file (truncated?)");
      if (!entries_.emplace(name, ZipEntry{data, usize, crc}).second) fail("duplicate zip entry '" + name + "'");
    }
  }

  const ZipEntry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  const std::map<std::string, ZipEntry>& entries() const { return entries_; }

  // The entry's bytes, CRC-checked once.
  const uint8_t* bytes(const std::string& name, const ZipEntry& e) {
    const uint8_t* p = d_ + e.offset;
    if (checked_.insert(name).second && crc32(p, e.size) != e.crc)
      fail("zip entry '" + name + "' fails its CRC-32 check (file corrupted)");
    return p;
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const { throw Error("[pth] " + path_ + ": " + msg); }
  const uint8_t* d_;
  size_t n_;
  const std::string& path_;
  std::map<std::string, ZipEntry> entries_;
  std::set<std::string> checked_;
};

// ---------------------------------------------------------------- unpickled values
// An element type named in the pickle: a torch.*Storage class or a torch dtype.
struct ElemType {
  std::string name;     // as written, e.g. "torch.HalfStorage"
  bool supported = false;
  DType dtype = DType::u8;
  size_t size = 0;      // bytes per element; 0 when unknown
  bool untyped = false;  // torch.UntypedStorage: bytes, the tensor's dtype comes from elsewhere
};

struct PyObj;
using Obj = std::shared_ptr<PyObj>;

struct Storage {
  std::string key;  // <prefix>data/<key> in the archive
  ElemType type;
  int64_t numel = 0;  // in elements of type (bytes when untyped)
};

struct TensorRef {
  std::shared_ptr<Storage> storage;
  ElemType type;
  int64_t offset = 0;  // in elements of type
  std::vector<int64_t> size, stride;
  bool bare_storage = false;  // a persistent-id storage not yet wrapped by _rebuild_tensor_*
};

enum class Kind : uint8_t { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Global, Tensor };
enum class GlobalKind : uint8_t { OrderedDict, RebuildV2, RebuildV3, RebuildParameter, ElemTypeTag };

struct PyObj {
  Kind kind = Kind::None;
  int64_t i = 0;  // Int, Bool
  double f = 0;
  std::string s;            // Str, Bytes; Global: "module.name"
  std::vector<Obj> items;   // Tuple, List; Dict: keys
  std::vector<Obj> values;  // Dict: values
  GlobalKind global = GlobalKind::OrderedDict;
  ElemType elem;                      // Global ElemTypeTag
  std::shared_ptr<TensorRef> tensor;  // Tensor
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::BigInt: return "int (beyond 64 bits)";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

bool elem_type_of(const std::string& module, const std::string& name, ElemType& e) {
  struct Row {
    const char* name;
    size_t size;
    bool supported;
    DType dtype;
  };
  static const Row storages[] = {
      {"FloatStorage", 4, true, DType::f32},      {"HalfStorage", 2, true, DType::f16},
      {"BFloat16Storage", 2, true, DType::bf16},  {"LongStorage", 8, true, DType::i64},
      {"ByteStorage", 1, true, DType::u8},        {"DoubleStorage", 8, false, DType::u8},
      {"IntStorage", 4, false, DType::u8},        {"ShortStorage", 2, false, DType::u8},
      {"CharStorage", 1, false, DType::u8},       {"BoolStorage", 1, false, DType::u8},
      {"ComplexFloatStorage", 8, false, DType::u8}, {"ComplexDoubleStorage", 16, false, DType::u8},
      {"QInt8Storage", 1, false, DType::u8},      {"QUInt8Storage", 1, false, DType::u8},
      {"QInt32Storage", 4, false, DType::u8}};
  static const Row dtypes[] = {
      {"float32", 4, true, DType::f32},  {"float", 4, true, DType::f32},
      {"float16", 2, true, DType::f16},  {"half", 2, true, DType::f16},
      {"bfloat16", 2, true, DType::bf16}, {"int64", 8, true, DType::i64},
      {"long", 8, true, DType::i64},     {"uint8", 1, true, DType::u8},
      {"float64", 8, false, DType::u8},  {"double", 8, false, DType::u8},
      {"int32", 4, false, DType::u8},    {"int", 4, false, DType::u8},
      {"int16", 2, false, DType::u8},    {"short", 2, false, DType::u8},
      {"int8", 1, false, DType::u8},     {"bool", 1, false, DType::u8},
      {"uint16", 2, false, DType::u8},   {"uint32", 4, false, DType::u8},
      {"uint64", 8, false, DType::u8},   {"complex64", 8, false, DType::u8},
      {"complex128", 16, false, DType::u8}, {"float8_e4m3fn", 1, false, DType::u8},
      {"float8_e5m2", 1, false, DType::u8}};
  e = ElemType{};
  e.name = module + "." + name;
  if ((module == "torch" || module == "torch.storage") && (name == "UntypedStorage" || name == "_UntypedStorage")) {
    e.untyped = true;
    e.size = 1;
    return true;
  }
  if (module == "torch" || module == "torch.cuda") {
    for (const Row& r : storages)
      if (name == r.name) {
        e.size = r.size;
        e.supported = r.supported;
        e.dtype = r.dtype;
        return true;
      }
    if (name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0) return true;  // size 0
  }
  if (module == "torch")
    for (const Row& r : dtypes)
      if (name == r.name) {
        e.size = r.size;
        e.supported = r.supported;
        e.dtype = r.dtype;
        return true;
      }
  return false;
}

// ---------------------------------------------------------------- the restricted unpickler
class Unpickler {
 public:
  Unpickler(const uint8_t* d, size_t n, const std::string& path, const std::string& entry)
      : begin_(d), p_(d), end_(d + n), path_(path), entry_(entry) {}
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;
  // Every object is also held in all_: emptying the containers first makes the teardown flat
  // (no recursion however deep a hostile pickle nests lists) and breaks reference cycles.
  // Objects returned by run() are only valid while the Unpickler lives.
  ~Unpickler() {
    for (const Obj& o : all_) {
      o->items.clear();
      o->values.clear();
    }
  }

  Obj run() {
    for (;;) {
      op_at_ = p_;
      uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                    // PROTO
        case 0x95: take(8); break;                 // FRAME: framing only
        case '.': return pop();                    // STOP
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '0': pop(); break;                    // POP
        case '1': pop_mark(); break;               // POP_MARK
        case '2': push(top()); break;              // DUP
        case 'N': push(make(Kind::None)); break;
        case 0x88: push(boolean(true)); break;     // NEWTRUE
        case 0x89: push(boolean(false)); break;    // NEWFALSE
        case 'J': push(integer(static_cast<int32_t>(le(take(4), 4)))); break;  // BININT
        case 'K': push(integer(u8())); break;                                 // BININT1
        case 'M': push(integer(static_cast<int64_t>(le(take(2), 2)))); break; // BININT2
        case 0x8a: push(long_bytes(u8())); break;                             // LONG1
        case 0x8b: push(long_bytes(len32())); break;                          // LONG4
        case 'I': push(text_int(line())); break;                              // INT
        case 'L': push(text_int(line())); break;                              // LONG
        case 'G': {                                                           // BINFLOAT
          uint64_t bits = 0;
          for (const uint8_t* q = take(8); q != p_; ++q) bits = (bits << 8) | *q;
          double v;
          std::memcpy(&v, &bits, 8);
          push(real(v));
          break;
        }
        case 'F': {                                                           // FLOAT
          std::string t = line();
          char* e = nullptr;
          double v = std::strtod(t.c_str(), &e);
          if (t.empty() || *e) fail("bad FLOAT literal '" + t + "'");
          push(real(v));
          break;
        }
        case 'X': push(str(Kind::Str, len32())); break;   // BINUNICODE
        case 0x8c: push(str(Kind::Str, u8())); break;     // SHORT_BINUNICODE
        case 0x8d: push(str(Kind::Str, len64())); break;  // BINUNICODE8
        case 'T': push(str(Kind::Str, len32())); break;   // BINSTRING
        case 'U': push(str(Kind::Str, u8())); break;      // SHORT_BINSTRING
        case 'B': push(str(Kind::Bytes, len32())); break; // BINBYTES
        case 'C': push(str(Kind::Bytes, u8())); break;    // SHORT_BINBYTES
        case 0x8e: push(str(Kind::Bytes, len64())); break;  // BINBYTES8
        case ')': push(make(Kind::Tuple)); break;         // EMPTY_TUPLE
        case 't': {                                       // TUPLE
          Obj o = make(Kind::Tuple);
          o->items = pop_mark();
          push(o);
          break;
        }
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          Obj o = make(Kind::Tuple);
          o->items.resize(op - 0x84);
          for (size_t k = o->items.size(); k-- > 0;) o->items[k] = pop();
          push(o);
          break;
        }
        case ']': push(make(Kind::List)); break;  // EMPTY_LIST
        case 'l': {                               // LIST
          Obj o = make(Kind::List);
          o->items = pop_mark();
          push(o);
          break;
        }
        case 0x8f: push(make(Kind::List)); break;  // EMPTY_SET, kept as a list
        case 'a': {                                // APPEND
          Obj v = pop();
          list_target(top())->items.push_back(v);
          break;
        }
        case 'e': case 0x90: {  // APPENDS, ADDITEMS
          std::vector<Obj> vs = pop_mark();
          Obj l = list_target(top());
          l->items.insert(l->items.end(), vs.begin(), vs.end());
          break;
        }
        case 0x91: {  // FROZENSET
          Obj o = make(Kind::List);
          o->items = pop_mark();
          push(o);
          break;
        }
        case '}': push(make(Kind::Dict)); break;  // EMPTY_DICT
        case 'd': {                               // DICT
          std::vector<Obj> kv = pop_mark();
          Obj o = make(Kind::Dict);
          set_items(o, kv);
          push(o);
          break;
        }
        case 's': {  // SETITEM
          Obj v = pop(), k = pop();
          set_items(top(), {k, v});
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Obj> kv = pop_mark();
          set_items(top(), kv);
          break;
        }
        case 'c': {  // GLOBAL
          std::string module = line();
          std::string name = line();
          push(global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Obj name = pop(), module = pop();
          if (module->kind != Kind::Str || name->kind != Kind::Str) fail("STACK_GLOBAL needs two strings");
          push(global(module->s, name->s));
          break;
        }
        case 'R': {  // REDUCE
          Obj args = pop(), fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': {  // BUILD: state of an OrderedDict (its _metadata) or a tensor; dropped
          Obj state = pop();
          Kind k = top()->kind;
          if (k != Kind::Dict && k != Kind::Tensor)
            fail(str_cat("BUILD on a ", kind_name(k), " is not allowed"));
          break;
        }
        case 'Q': push(persistent_load(pop())); break;  // BINPERSID
        case 'q': memo_put(u8()); break;                // BINPUT
        case 'r': memo_put(len32()); break;             // LONG_BINPUT
        case 0x94: memo_put(memo_.size()); break;       // MEMOIZE
        case 'p': memo_put(line_index()); break;        // PUT
        case 'h': push(memo_get(u8())); break;          // BINGET
        case 'j': push(memo_get(len32())); break;       // LONG_BINGET
        case 'g': push(memo_get(line_index())); break;  // GET
        default:
          fail(str_cat("pickle opcode 0x", hex(op), " ('", printable(op),
                       "') is not allowed in a checkpoint"));
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(str_cat("[pth] ", path_, ": ", entry_, " at byte ", op_at_ - begin_, ": ", msg));
  }
  static std::string hex(uint8_t v) {
    const char* h = "0123456789abcdef";
    return {h[v >> 4], h[v & 15]};
  }
  static char printable(uint8_t v) { return v >= 0x20 && v < 0x7f ? static_cast<char>(v) : '?'; }

  const uint8_t* take(uint64_t n) {
    if (static_cast<uint64_t>(end_ - p_) < n) fail("pickle data ends early (truncated)");
    const uint8_t* q = p_;
    p_ += n;
    return q;
  }
  uint8_t u8() { return *take(1); }
  uint64_t len32() { return le(take(4), 4); }
  uint64_t len64() { return le(take(8), 8); }
  std::string line() {
    const uint8_t* q = p_;
    while (q < end_ && *q != '\n') ++q;
    if (q == end_) fail("pickle data ends early (unterminated line)");
    std::string s(reinterpret_cast<const char*>(p_), q - p_);
    p_ = q + 1;
    return s;
  }
  uint64_t line_index() {
    std::string t = line();
    if (t.empty() || t.size() > 18 || t.find_first_not_of("0123456789") != std::string::npos)
      fail("bad memo index '" + t + "'");
    return std::stoull(t);
  }

  void push(Obj o) { stack_.push_back(std::move(o)); }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Obj pop() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    Obj o = std::move(stack_.back());
    stack_.pop_back();
    return o;
  }
  const Obj& top() const {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    return stack_.back();
  }
  std::vector<Obj> pop_mark() {
    if (marks_.empty()) fail("pickle MARK missing");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Obj> v(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return v;
  }
  void memo_put(uint64_t i) { memo_[i] = top(); }
  Obj memo_get(uint64_t i) {
    auto it = memo_.find(i);
    if (it == memo_.end()) fail(str_cat("memo entry ", i, " used before it was stored"));
    return it->second;
  }

  Obj make(Kind k) {
    all_.push_back(std::make_shared<PyObj>());
    all_.back()->kind = k;
    return all_.back();
  }
  Obj boolean(bool b) {
    Obj o = make(Kind::Bool);
    o->i = b;
    return o;
  }
  Obj integer(int64_t v) {
    Obj o = make(Kind::Int);
    o->i = v;
    return o;
  }
  Obj real(double v) {
    Obj o = make(Kind::Float);
    o->f = v;
    return o;
  }
  Obj str(Kind k, uint64_t n) {
    Obj o = make(k);
    const uint8_t* q = take(n);
    o->s.assign(reinterpret_cast<const char*>(q), n);
    return o;
  }
  // Little-endian two's complement of n bytes; wider than 64 bits is kept as an opaque BigInt.
  Obj long_bytes(uint64_t n) {
    const uint8_t* q = take(n);
    if (n > 8) return make(Kind::BigInt);
    uint64_t v = 0;
    for (uint64_t k = n; k-- > 0;) v = (v << 8) | q[k];
    if (n > 0 && n < 8 && (q[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);
    return integer(static_cast<int64_t>(v));
  }
  Obj text_int(std::string t) {
    if (t == "01") return boolean(true);
    if (t == "00") return boolean(false);
    if (!t.empty() && t.back() == 'L') t.pop_back();
    errno = 0;
    char* e = nullptr;
    long long v = std::strtoll(t.c_str(), &e, 10);
    if (t.empty() || *e) fail("bad INT literal '" + t + "'");
    if (errno == ERANGE) return make(Kind::BigInt);
    return integer(v);
  }

  Obj list_target(const Obj& o) {
    if (o->kind != Kind::List) fail(str_cat("APPEND to a ", kind_name(o->kind)));
    return o;
  }
  void set_items(const Obj& d, const std::vector<Obj>& kv) {
    if (d->kind != Kind::Dict) fail(str_cat("SETITEM on a ", kind_name(d->kind)));
    if (kv.size() % 2) fail("SETITEMS with an odd number of items");
    for (size_t k = 0; k < kv.size(); k += 2) {
      d->items.push_back(kv[k]);
      d->values.push_back(kv[k + 1]);
    }
  }

  Obj global(const std::string& module, const std::string& name) {
    Obj o = make(Kind::Global);
    o->s = module + "." + name;
    if (module == "collections" && name == "OrderedDict") {
      o->global = GlobalKind::OrderedDict;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      o->global = GlobalKind::RebuildV2;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v3") {
      o->global = GlobalKind::RebuildV3;
    } else if (module == "torch._utils" &&
               (name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state")) {
      o->global = GlobalKind::RebuildParameter;
    } else if (elem_type_of(module, name, o->elem)) {
      o->global = GlobalKind::ElemTypeTag;
    } else {
      fail("refusing global '" + o->s +
           "': only collections.OrderedDict, torch._utils._rebuild_tensor_v2/v3, "
           "torch._utils._rebuild_parameter, torch storage types and dtypes are allowed");
    }
    return o;
  }

  int64_t as_int(const Obj& o, const char* what) const {
    if (o->kind != Kind::Int) fail(str_cat(what, " is a ", kind_name(o->kind), ", expected an int"));
    return o->i;
  }
  std::vector<int64_t> as_ints(const Obj& o, const char* what) const {
    if (o->kind != Kind::Tuple && o->kind != Kind::List)
      fail(str_cat(what, " is a ", kind_name(o->kind), ", expected a tuple of ints"));
    std::vector<int64_t> v;
    for (const Obj& x : o->items) v.push_back(as_int(x, what));
    return v;
  }

  Obj reduce(const Obj& fn, const Obj& args) {
    if (fn->kind != Kind::Global) fail(str_cat("REDUCE of a ", kind_name(fn->kind), " is not allowed"));
    if (args->kind != Kind::Tuple) fail("REDUCE of '" + fn->s + "' without an argument tuple");
    const std::vector<Obj>& a = args->items;
    switch (fn->global) {
      case GlobalKind::OrderedDict:
        if (!a.empty()) fail("collections.OrderedDict with arguments is not supported");
        return make(Kind::Dict);
      case GlobalKind::RebuildParameter:
        if (a.empty() || a[0]->kind != Kind::Tensor) fail(fn->s + " expects a tensor");
        return a[0];
      case GlobalKind::RebuildV2:
      case GlobalKind::RebuildV3: {
        const bool v3 = fn->global == GlobalKind::RebuildV3;
        if (a.size() < (v3 ? 7u : 6u) || a.size() > (v3 ? 8u : 7u))
          fail(str_cat(fn->s, " with ", a.size(), " arguments"));
        if (a[0]->kind != Kind::Tensor || !a[0]->tensor->bare_storage)
          fail(fn->s + ": first argument is not a storage");
        auto t = std::make_shared<TensorRef>();
        t->storage = a[0]->tensor->storage;
        t->type = t->storage->type;
        if (v3) {
          if (a[6]->kind != Kind::Global || a[6]->global != GlobalKind::ElemTypeTag)
            fail(fn->s + ": dtype argument is not a torch dtype");
          t->type = a[6]->elem;
        }
        t->offset = as_int(a[1], "storage offset");
        if (t->offset < 0) fail(str_cat(fn->s, ": negative storage offset ", t->offset));
        t->size = as_ints(a[2], "size");
        t->stride = as_ints(a[3], "stride");
        Obj o = make(Kind::Tensor);
        o->tensor = t;
        return o;
      }
      case GlobalKind::ElemTypeTag: break;
    }
    fail("calling '" + fn->s + "' is not allowed");
  }

  // ('storage', storage_type, key, location, numel) -> a storage, carried as a Tensor object
  // marked bare_storage until _rebuild_tensor_* wraps it.
  Obj persistent_load(const Obj& pid) {
    const std::vector<Obj>& a = pid->items;
    if (pid->kind != Kind::Tuple || a.size() != 5 || a[0]->kind != Kind::Str || a[0]->s != "storage")
      fail("persistent id is not ('storage', type, key, location, numel)");
    if (a[1]->kind != Kind::Global || a[1]->global != GlobalKind::ElemTypeTag)
      fail("persistent id: storage type is not a torch storage type or dtype");
    if (a[2]->kind != Kind::Str) fail("persistent id: storage key is not a string");
    auto s = std::make_shared<Storage>();
    s->key = a[2]->s;
    s->type = a[1]->elem;
    s->numel = as_int(a[4], "storage numel");
    if (s->numel < 0) fail("negative storage numel");
    auto t = std::make_shared<TensorRef>();
    t->storage = s;
    t->bare_storage = true;
    Obj o = make(Kind::Tensor);
    o->tensor = t;
    return o;
  }

  const uint8_t* begin_;
  const uint8_t* p_;
  const uint8_t* end_;
  const uint8_t* op_at_ = nullptr;
  const std::string& path_;
  const std::string& entry_;
  std::vector<Obj> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Obj> memo_;
  std::vector<Obj> all_;
};

// Called once the element count is known to be below 2^62: no product here overflows.
bool is_contiguous(const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
  int64_t expect = 1;
  for (size_t d = size.size(); d-- > 0;) {
    if (size[d] != 1 && stride[d] != expect) return false;
    expect *= size[d];
  }
  return true;
}

const uint8_t kEmpty[1] = {0};

}  // namespace

PthReader::PthReader(const std::string& path)
    : path_(path), owned_(std::make_shared<std::vector<std::vector<uint8_t>>>()) {
  auto fail = [&](const std::string& msg) { throw Error("[pth] " + path + ": " + msg); };
  detail::MappedFile m = detail::map_file(path, "[pth]");
  mapping_ = m.keep;
  if (m.size == 0) fail("file is empty");
  Zip zip(m.data, m.size, path);

  std::string pkl;
  for (const auto& kv : zip.entries()) {
    const std::string& n = kv.first;
    if (n == "data.pkl" || (n.size() > 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0)) {
      if (!pkl.empty()) fail("several data.pkl entries ('" + pkl + "', '" + n + "')");
      pkl = n;
    }
  }
  if (pkl.empty()) fail("no data.pkl entry: not a torch.save checkpoint");
  const std::string prefix = pkl.substr(0, pkl.size() - 8);
  if (const ZipEntry* bo = zip.find(prefix + "byteorder")) {
    std::string order(reinterpret_cast<const char*>(zip.bytes(prefix + "byteorder", *bo)), bo->size);
    if (order != "little") fail("byteorder '" + order + "' is not supported (little-endian only)");
  }

  const ZipEntry& pe = *zip.find(pkl);
  Unpickler unpickler(zip.bytes(pkl, pe), pe.size, path, pkl);
  Obj root = unpickler.run();
  if (root->kind != Kind::Dict) fail(str_cat(pkl, " holds a ", kind_name(root->kind), ", expected a dict"));

  Obj sd = root;
  for (const char* key : {"state_dict", "model", "state_dict_ema"}) {
    bool found = false;
    for (size_t i = 0; i < root->items.size(); ++i)
      if (root->items[i]->kind == Kind::Str && root->items[i]->s == key &&
          root->values[i]->kind == Kind::Dict) {
        sd = root->values[i];
        state_dict_key_ = key;
        found = true;
        break;
      }
    if (found) break;
  }

  for (size_t i = 0; i < sd->items.size(); ++i) {
    if (sd->items[i]->kind != Kind::Str || sd->values[i]->kind != Kind::Tensor) continue;
    const std::string& name = sd->items[i]->s;
    const TensorRef& t = *sd->values[i]->tensor;
    if (t.bare_storage) continue;
    auto bad = [&](const std::string& msg) { fail("tensor '" + name + "': " + msg); };
    if (!t.type.supported)
      bad("dtype " + t.type.name + " is not supported (float32, float16, bfloat16, int64, uint8)");
    const Storage& st = *t.storage;
    if (st.type.size == 0) bad("storage type " + st.type.name + " has an unknown element size");
    if (!st.type.untyped && st.type.dtype != t.type.dtype)
      bad("dtype " + t.type.name + " does not match its storage type " + st.type.name);
    if (t.size.size() != t.stride.size())
      bad(str_cat("size ", shape_str(t.size), " and stride ", shape_str(t.stride), " differ in rank"));
    const std::string entry = prefix + "data/" + st.key;
    const ZipEntry* ze = zip.find(entry);
    if (!ze) bad("storage entry '" + entry + "' is missing from the archive");
    const uint64_t esize = dtype_size(t.type.dtype);
    if (static_cast<uint64_t>(st.numel) > (uint64_t(1) << 62) / st.type.size) bad("storage numel overflows");
    const uint64_t storage_bytes = static_cast<uint64_t>(st.numel) * st.type.size;
    if (ze->size < storage_bytes)
      bad(str_cat("storage entry '", entry, "' has ", ze->size, " bytes, expected ", storage_bytes));
    const uint64_t storage_elems = storage_bytes / esize;

    RawTensor r;
    r.name = name;
    r.dtype = t.type.dtype;
    r.shape = t.size;
    uint64_t numel = 1;
    __int128 last = t.offset;
    for (size_t d = 0; d < t.size.size(); ++d) {
      if (t.size[d] < 0 || t.stride[d] < 0)
        bad(str_cat("negative size or stride: size ", shape_str(t.size), " stride ", shape_str(t.stride)));
      if (t.size[d] != 0 && numel > (uint64_t(1) << 62) / static_cast<uint64_t>(t.size[d]))
        bad("size " + shape_str(t.size) + " overflows");
      numel *= static_cast<uint64_t>(t.size[d]);
      if (t.size[d] > 0) last += static_cast<__int128>(t.size[d] - 1) * t.stride[d];
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, esize, &nbytes) || nbytes > (uint64_t(1) << 62))
      bad("size " + shape_str(t.size) + " overflows");
    r.nbytes = static_cast<size_t>(nbytes);
    if (numel == 0) {
      r.data = kEmpty;
    } else {
      if (last >= static_cast<__int128>(storage_elems))
        bad(str_cat("size ", shape_str(t.size), ", stride ", shape_str(t.stride), ", offset ", t.offset,
                    " reach past its storage of ", storage_elems, " elements"));
      const uint8_t* base = zip.bytes(entry, *ze);
      if (is_contiguous(t.size, t.stride)) {
        r.data = base + static_cast<uint64_t>(t.offset) * esize;
      } else if (numel > storage_elems) {
        bad(str_cat("size ", shape_str(t.size), " with stride ", shape_str(t.stride), " has more elements than its storage (",
                    storage_elems, "): expanded or overlapping views are not supported"));
      } else {
        owned_->emplace_back(r.nbytes);
        uint8_t* dst = owned_->back().data();
        const size_t nd = t.size.size();
        // The stride of a size-1 dimension is never used (it can be anything, INT64_MAX
        // included): 0 here, so that the odometer below stays within [offset, last] and no
        // step overflows (each stride * (size - 1) is below the storage size, checked above).
        std::vector<int64_t> stride(t.stride);
        for (size_t d = 0; d < nd; ++d)
          if (t.size[d] == 1) stride[d] = 0;
        std::vector<int64_t> idx(nd, 0);
        int64_t src = t.offset;
        for (uint64_t n = 0; n < numel; ++n) {
          std::memcpy(dst + n * esize, base + static_cast<uint64_t>(src) * esize, esize);
          if (n + 1 == numel) break;
          for (size_t d = nd; d-- > 0;) {
            if (++idx[d] < t.size[d]) {
              src += stride[d];
              break;
            }
            src -= stride[d] * (t.size[d] - 1);
            idx[d] = 0;
          }
        }
        r.data = dst;
      }
    }
    if (!index_.emplace(name, tensors_.size()).second) bad("appears twice");
    tensors_.push_back(std::move(r));
  }
  if (tensors_.empty())
    fail(state_dict_key_.empty() ? "the top-level dict holds no tensors"
                                 : "the dict under '" + state_dict_key_ + "' holds no tensors");
}

const RawTensor* PthReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace hr::io

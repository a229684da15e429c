#include "io/torch_pickle.h"

#include <cstring>
#include <deque>
#include <functional>
#include <unordered_map>
#include <vector>

#include "io/file_view.h"

namespace mamba::io {
namespace {

// ---- The zip container --------------------------------------------------------------------
// Layout used (APPNOTE.TXT): end-of-central-directory record at the end (optionally preceded by
// the zip64 locator and record), central directory entries giving each member's sizes and
// local-header offset, local headers followed by the member's bytes. torch.save writes members
// uncompressed ("stored") with a data descriptor, so sizes come from the central directory.

constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEndOfDirectory = 0x06054b50,
                   kZip64EndOfDirectory = 0x06064b50, kZip64Locator = 0x07064b50;

struct ByteRange {
  const uint8_t* data;
  size_t size;
};

// Bounds-checked reads from the archive; every failure names the archive.
class ArchiveBytes {
 public:
  ArchiveBytes(const uint8_t* data, size_t size, const std::string& source)
      : data_(data), size_(size), source_(source) {}
  size_t size() const { return size_; }
  const std::string& source() const { return source_; }

  void require(uint64_t offset, uint64_t length, const char* what) const {
    MAMBA_CHECK(offset <= size_ && length <= size_ - offset, source_, ": zip ", what, " at byte ", offset,
                " reaches past the end of the ", size_, "-byte file (truncated or corrupt archive)");
  }
  template <typename T>
  T read(uint64_t offset, const char* what) const {
    require(offset, sizeof(T), what);
    return load_le<T>(data_ + offset);
  }
  const uint8_t* at(uint64_t offset) const { return data_ + offset; }

 private:
  const uint8_t* data_;
  size_t size_;
  std::string source_;
};

struct EndOfDirectory {
  uint64_t entries, directory_size, directory_offset;
};

EndOfDirectory find_end_of_directory(const ArchiveBytes& zip) {
  constexpr size_t kRecordSize = 22, kMaxComment = 65535;
  MAMBA_CHECK(zip.size() >= kRecordSize, zip.source(), ": ", zip.size(),
              " bytes is too short for a zip archive (torch.save file)");
  size_t lowest = zip.size() - kRecordSize > kMaxComment ? zip.size() - kRecordSize - kMaxComment : 0;
  for (size_t pos = zip.size() - kRecordSize + 1; pos-- > lowest;) {
    if (load_le<uint32_t>(zip.at(pos)) != kEndOfDirectory) continue;  // in bounds: pos + 22 <= size
    EndOfDirectory end{zip.read<uint16_t>(pos + 10, "end record"), zip.read<uint32_t>(pos + 12, "end record"),
                       zip.read<uint32_t>(pos + 16, "end record")};
    if (pos >= 20 && zip.read<uint32_t>(pos - 20, "zip64 locator") == kZip64Locator) {
      uint64_t record = zip.read<uint64_t>(pos - 20 + 8, "zip64 locator");
      MAMBA_CHECK(zip.read<uint32_t>(record, "zip64 end record") == kZip64EndOfDirectory, zip.source(),
                  ": zip64 locator points at byte ", record, ", which holds no zip64 end record");
      end.entries = zip.read<uint64_t>(record + 32, "zip64 end record");
      end.directory_size = zip.read<uint64_t>(record + 40, "zip64 end record");
      end.directory_offset = zip.read<uint64_t>(record + 48, "zip64 end record");
    }
    return end;
  }
  fail(zip.source(), ": not a zip archive (no end-of-central-directory record); expected a torch.save file");
}

// Member name -> stored bytes.
std::unordered_map<std::string, ByteRange> read_members(const ArchiveBytes& zip) {
  EndOfDirectory end = find_end_of_directory(zip);
  zip.require(end.directory_offset, end.directory_size, "central directory");
  std::unordered_map<std::string, ByteRange> members;
  uint64_t pos = end.directory_offset;
  for (uint64_t i = 0; i < end.entries; ++i) {
    MAMBA_CHECK(zip.read<uint32_t>(pos, "central directory entry") == kCentralHeader, zip.source(),
                ": central directory entry ", i, " at byte ", pos, " has a bad signature (corrupt archive)");
    zip.require(pos, 46, "central directory entry");
    uint16_t method = zip.read<uint16_t>(pos + 10, "central directory entry");
    uint64_t compressed = zip.read<uint32_t>(pos + 20, "central directory entry");
    uint64_t uncompressed = zip.read<uint32_t>(pos + 24, "central directory entry");
    uint16_t name_length = zip.read<uint16_t>(pos + 28, "central directory entry");
    uint16_t extra_length = zip.read<uint16_t>(pos + 30, "central directory entry");
    uint16_t comment_length = zip.read<uint16_t>(pos + 32, "central directory entry");
    uint64_t local_offset = zip.read<uint32_t>(pos + 42, "central directory entry");
    zip.require(pos + 46, uint64_t(name_length) + extra_length, "member name");
    std::string name(reinterpret_cast<const char*>(zip.at(pos + 46)), name_length);

    // The zip64 extra field holds, in this order, whichever of the three values are 0xFFFFFFFF.
    for (uint64_t extra = pos + 46 + name_length, extra_end = extra + extra_length; extra + 4 <= extra_end;) {
      uint16_t id = zip.read<uint16_t>(extra, "extra field");
      uint16_t length = zip.read<uint16_t>(extra + 2, "extra field");
      MAMBA_CHECK(extra + 4 + length <= extra_end, zip.source(), ": member ", name, ": extra field overruns its entry");
      if (id == 0x0001) {
        uint64_t field = extra + 4, field_end = field + length;
        for (uint64_t* value : {&uncompressed, &compressed, &local_offset}) {
          if (*value != 0xFFFFFFFFu) continue;
          MAMBA_CHECK(field + 8 <= field_end, zip.source(), ": member ", name, ": zip64 extra field is too short");
          *value = zip.read<uint64_t>(field, "zip64 extra field");
          field += 8;
        }
      }
      extra += 4 + length;
    }
    MAMBA_CHECK(method == 0, zip.source(), ": member ", name, " is compressed (method ", method,
                "); torch.save writes stored (uncompressed) members — re-save the file with torch.save");
    MAMBA_CHECK(compressed == uncompressed, zip.source(), ": member ", name, " is stored but its compressed size ",
                compressed, " differs from its size ", uncompressed);
    MAMBA_CHECK(zip.read<uint32_t>(local_offset, "local header") == kLocalHeader, zip.source(), ": member ", name,
                ": no local header at byte ", local_offset);
    zip.require(local_offset, 30, "local header");
    uint64_t data_offset = local_offset + 30 + zip.read<uint16_t>(local_offset + 26, "local header") +
                           zip.read<uint16_t>(local_offset + 28, "local header");
    zip.require(data_offset, uncompressed, "member data");
    MAMBA_CHECK(members.emplace(name, ByteRange{zip.at(data_offset), size_t(uncompressed)}).second, zip.source(),
                ": member ", name, " appears twice in the archive");
    pos += 46 + uint64_t(name_length) + extra_length + comment_length;
  }
  return members;
}

// ---- The pickle machine -------------------------------------------------------------------
// Runs the opcodes that torch.save emits for a dict of tensors. Objects live in an
// arena owned by the machine (the pickle may build reference cycles through the memo); the
// stack, marks and memo hold pointers into it.

enum class Global { ordered_dict, rebuild_tensor_v2, rebuild_parameter, storage_type };

struct Value {
  enum class Kind { none, boolean, integer, floating, string, tuple, list, dict, global, storage, tensor } kind;
  int64_t integer = 0;  // also the boolean
  double floating = 0;
  std::string string;         // strings; the storage key
  std::vector<Value*> items;  // tuple and list elements; dict keys and values alternating
  Global global = Global::ordered_dict;
  DType dtype = DType::f32;  // storage_type globals and storages
  Tensor tensor;             // storages (flat, the whole storage) and tensors
};

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::none:
      return "None";
    case Value::Kind::boolean:
      return "bool";
    case Value::Kind::integer:
      return "int";
    case Value::Kind::floating:
      return "float";
    case Value::Kind::string:
      return "str";
    case Value::Kind::tuple:
      return "tuple";
    case Value::Kind::list:
      return "list";
    case Value::Kind::dict:
      return "dict";
    case Value::Kind::global:
      return "global";
    case Value::Kind::storage:
      return "storage";
    case Value::Kind::tensor:
      return "tensor";
  }
  return "?";
}

struct StorageClass {
  const char* name;
  DType dtype;
};
constexpr StorageClass kStorageClasses[] = {
    {"FloatStorage", DType::f32},  {"BFloat16Storage", DType::bf16}, {"HalfStorage", DType::f16},
    {"DoubleStorage", DType::f64}, {"LongStorage", DType::i64},      {"IntStorage", DType::i32},
};

// The opcodes this machine runs, named as in Python's pickle module: protocol 2's, plus protocol
// 4's FRAME, SHORT_BINUNICODE, MEMOIZE and STACK_GLOBAL.
enum Opcode : uint8_t {
  kProto = 0x80,
  kFrame = 0x95,
  kEmptyDict = '}',
  kEmptyList = ']',
  kEmptyTuple = ')',
  kMark = '(',
  kBinUnicode = 'X',
  kShortBinUnicode = 0x8c,
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kLong1 = 0x8a,
  kBinFloat = 'G',
  kNone = 'N',
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kTuple = 't',
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kSetItem = 's',
  kSetItems = 'u',
  kAppend = 'a',
  kAppends = 'e',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kMemoize = 0x94,
  kBinGet = 'h',
  kLongBinGet = 'j',
  kGlobal = 'c',
  kStackGlobal = 0x93,
  kReduce = 'R',
  kBinPersId = 'Q',
  kBuild = 'b',
  kStop = '.',
};

class PickleMachine {
 public:
  // `copy_budget` bounds the bytes that gathering non-contiguous tensors may allocate, so that a
  // small crafted file cannot demand unbounded memory by rebuilding one strided view many times.
  PickleMachine(ByteRange pickle, std::string source, std::function<Tensor(const std::string&, DType, int64_t)> storage,
                uint64_t copy_budget)
      : code_(pickle), source_(std::move(source)), load_storage_(std::move(storage)), copy_budget_(copy_budget) {}

  Value* run() {
    while (true) {
      size_t at = pos_;
      uint8_t op = read_bytes(1)[0];
      switch (op) {
        case kProto:
          read_bytes(1);
          break;
        case kFrame:  // framing is only a read-ahead hint
          read_bytes(8);
          break;
        case kEmptyDict:
          push(make(Value::Kind::dict));
          break;
        case kEmptyList:
          push(make(Value::Kind::list));
          break;
        case kEmptyTuple:
          push(make(Value::Kind::tuple));
          break;
        case kMark:
          marks_.push_back(stack_.size());
          break;
        case kBinUnicode:
          push_string(read_u<uint32_t>());
          break;
        case kShortBinUnicode:
          push_string(read_u<uint8_t>());
          break;
        case kBinInt:
          push_integer(int32_t(read_u<uint32_t>()));
          break;
        case kBinInt1:
          push_integer(read_u<uint8_t>());
          break;
        case kBinInt2:
          push_integer(read_u<uint16_t>());
          break;
        case kLong1:
          push_integer(read_long(read_u<uint8_t>()));
          break;
        case kBinFloat:
          push_float();
          break;
        case kNone:
          push(make(Value::Kind::none));
          break;
        case kNewTrue:
          push_bool(true);
          break;
        case kNewFalse:
          push_bool(false);
          break;
        case kTuple:
          push_tuple(pop_to_mark());
          break;
        case kTuple1:
          push_tuple(pop_n(1));
          break;
        case kTuple2:
          push_tuple(pop_n(2));
          break;
        case kTuple3:
          push_tuple(pop_n(3));
          break;
        case kSetItem:
          set_items(pop_n(2));
          break;
        case kSetItems:
          set_items(pop_to_mark());
          break;
        case kAppend:
          append(pop_n(1));
          break;
        case kAppends:
          append(pop_to_mark());
          break;
        case kBinPut:
          memo_[read_u<uint8_t>()] = top();
          break;
        case kLongBinPut:
          memo_[read_u<uint32_t>()] = top();
          break;
        case kMemoize:
          memo_[uint32_t(memo_.size())] = top();
          break;
        case kBinGet:
          push(memo_get(read_u<uint8_t>()));
          break;
        case kLongBinGet:
          push(memo_get(read_u<uint32_t>()));
          break;
        case kGlobal: {
          std::string module = read_line(), name = read_line();
          push(make_global(module, name));
          break;
        }
        case kStackGlobal: {
          Value* name = pop();
          Value* module = pop();
          MAMBA_CHECK(module->kind == Value::Kind::string && name->kind == Value::Kind::string, where(at),
                      "STACK_GLOBAL needs two strings");
          push(make_global(module->string, name->string));
          break;
        }
        case kReduce:
          reduce(at);
          break;
        case kBinPersId:
          push(persistent_load(pop(), at));
          break;
        case kBuild:
          build(at);
          break;
        case kStop: {
          Value* result = pop();
          MAMBA_CHECK(stack_.empty() && marks_.empty(), where(at), "STOP leaves ", stack_.size(),
                      " values on the stack");
          return result;
        }
        default:
          fail(where(at), "pickle opcode 0x", hex(op),
               " is not one that torch.save uses for a state dict of tensors (unsupported or corrupt data.pkl)");
      }
    }
  }

  const std::unordered_map<const Value*, std::string>& storage_keys() const { return storage_key_of_tensor_; }

 private:
  static std::string hex(uint8_t byte) {
    const char* digits = "0123456789abcdef";
    return {digits[byte >> 4], digits[byte & 15]};
  }
  std::string where(size_t at) const { return source_ + ": data.pkl byte " + std::to_string(at) + ": "; }

  const uint8_t* read_bytes(size_t n) {
    MAMBA_CHECK(n <= code_.size - pos_, source_, ": data.pkl ends in the middle of an opcode at byte ", pos_,
                " (truncated pickle; no STOP)");
    const uint8_t* p = code_.data + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  T read_u() {
    return load_le<T>(read_bytes(sizeof(T)));
  }
  int64_t read_long(size_t n) {
    MAMBA_CHECK(n <= 8, where(pos_), "integer of ", n, " bytes does not fit in 64 bits");
    const uint8_t* p = read_bytes(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(p[i]) << (8 * i);
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return int64_t(v);
  }
  std::string read_line() {
    size_t start = pos_;
    while (read_bytes(1)[0] != '\n') {
    }
    return std::string(reinterpret_cast<const char*>(code_.data + start), pos_ - start - 1);
  }

  Value* make(Value::Kind kind) {
    arena_.emplace_back();
    arena_.back().kind = kind;
    return &arena_.back();
  }
  void push(Value* v) { stack_.push_back(v); }
  void push_string(size_t length) {
    Value* v = make(Value::Kind::string);
    v->string.assign(reinterpret_cast<const char*>(read_bytes(length)), length);
    push(v);
  }
  void push_integer(int64_t i) {
    Value* v = make(Value::Kind::integer);
    v->integer = i;
    push(v);
  }
  void push_bool(bool b) {
    Value* v = make(Value::Kind::boolean);
    v->integer = b;
    push(v);
  }
  void push_float() {
    const uint8_t* p = read_bytes(8);
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = bits << 8 | p[i];  // big-endian
    Value* v = make(Value::Kind::floating);
    std::memcpy(&v->floating, &bits, 8);
    push(v);
  }
  void push_tuple(std::vector<Value*> items) {
    Value* v = make(Value::Kind::tuple);
    v->items = std::move(items);
    push(v);
  }

  // The bottom of the stack visible now: values below the innermost mark belong to the caller.
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Value* top() {
    MAMBA_CHECK(stack_.size() > floor(), where(pos_ - 1), "memo store with an empty stack");
    return stack_.back();
  }
  Value* pop() {
    MAMBA_CHECK(stack_.size() > floor(), where(pos_ - 1), "stack underflow (corrupt pickle)");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  std::vector<Value*> pop_n(size_t n) {
    MAMBA_CHECK(stack_.size() - floor() >= n, where(pos_ - 1), "stack underflow (corrupt pickle)");
    std::vector<Value*> items(stack_.end() - std::ptrdiff_t(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return items;
  }
  std::vector<Value*> pop_to_mark() {
    MAMBA_CHECK(!marks_.empty(), where(pos_ - 1), "no MARK to pop to (corrupt pickle)");
    std::vector<Value*> items(stack_.begin() + std::ptrdiff_t(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  Value* memo_get(uint32_t index) {
    auto it = memo_.find(index);
    MAMBA_CHECK(it != memo_.end(), where(pos_ - 1), "memo entry ", index, " was never stored (corrupt pickle)");
    return it->second;
  }

  void set_items(std::vector<Value*> pairs) {
    MAMBA_CHECK(pairs.size() % 2 == 0, where(pos_ - 1), "SETITEMS with an odd number of values");
    Value* dict = pop();
    MAMBA_CHECK(dict->kind == Value::Kind::dict, where(pos_ - 1), "SETITEM(S) on a ", kind_name(dict->kind),
                ", not a dict");
    dict->items.insert(dict->items.end(), pairs.begin(), pairs.end());
    push(dict);
  }
  void append(std::vector<Value*> values) {
    Value* list = pop();
    MAMBA_CHECK(list->kind == Value::Kind::list, where(pos_ - 1), "APPEND(S) on a ", kind_name(list->kind),
                ", not a list");
    list->items.insert(list->items.end(), values.begin(), values.end());
    push(list);
  }

  Value* make_global(const std::string& module, const std::string& name) {
    Value* v = make(Value::Kind::global);
    if (module == "collections" && name == "OrderedDict") {
      v->global = Global::ordered_dict;
      return v;
    }
    if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      v->global = Global::rebuild_tensor_v2;
      return v;
    }
    if (module == "torch._utils" && name == "_rebuild_parameter") {
      v->global = Global::rebuild_parameter;
      return v;
    }
    if (module == "torch") {
      for (const StorageClass& s : kStorageClasses) {
        if (name != s.name) continue;
        v->global = Global::storage_type;
        v->dtype = s.dtype;
        return v;
      }
    }
    fail(where(pos_), "data.pkl needs '", module, ".", name,
         "', which a state dict of float/int tensors does not use (supported: collections.OrderedDict, "
         "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, torch.{Float,BFloat16,Half,Double,Long,"
         "Int}Storage)");
  }

  static int64_t integer_of(const Value* v, const std::string& what) {
    MAMBA_CHECK(v->kind == Value::Kind::integer, what, " must be an int, got ", kind_name(v->kind));
    return v->integer;
  }
  static Shape shape_of(const Value* v, const std::string& what) {
    MAMBA_CHECK(v->kind == Value::Kind::tuple, what, " must be a tuple of ints, got ", kind_name(v->kind));
    Shape shape;
    for (const Value* d : v->items) shape.push_back(integer_of(d, what));
    return shape;
  }

  // ('storage', storage_type, key, location, numel) -> the storage's bytes as a flat tensor.
  Value* persistent_load(Value* id, size_t at) {
    const auto& f = id->items;
    MAMBA_CHECK(id->kind == Value::Kind::tuple && f.size() == 5 && f[0]->kind == Value::Kind::string &&
                    f[0]->string == "storage",
                where(at), "persistent id is not ('storage', type, key, location, numel)");
    MAMBA_CHECK(f[1]->kind == Value::Kind::global && f[1]->global == Global::storage_type, where(at),
                "persistent id's storage type is not a torch storage class");
    MAMBA_CHECK(f[2]->kind == Value::Kind::string, where(at), "persistent id's storage key is not a string");
    int64_t numel = integer_of(f[4], where(at) + "storage " + f[2]->string + " element count");
    Value* storage = make(Value::Kind::storage);
    storage->string = f[2]->string;
    storage->dtype = f[1]->dtype;
    storage->tensor = load_storage_(f[2]->string, f[1]->dtype, numel);
    return storage;
  }

  void reduce(size_t at) {
    Value* args = pop();
    Value* callable = pop();
    MAMBA_CHECK(callable->kind == Value::Kind::global, where(at), "REDUCE calls a ", kind_name(callable->kind));
    MAMBA_CHECK(args->kind == Value::Kind::tuple, where(at), "REDUCE arguments are a ", kind_name(args->kind),
                ", not a tuple");
    const auto& a = args->items;
    switch (callable->global) {
      case Global::ordered_dict:
        MAMBA_CHECK(a.empty(), where(at), "OrderedDict() with arguments is not supported");
        push(make(Value::Kind::dict));
        return;
      case Global::rebuild_parameter:
        MAMBA_CHECK(a.size() >= 1 && a[0]->kind == Value::Kind::tensor, where(at),
                    "_rebuild_parameter needs a tensor as its first argument");
        push(a[0]);
        return;
      case Global::rebuild_tensor_v2:
        push(rebuild_tensor(a, at));
        return;
      case Global::storage_type:
        fail(where(at), "a storage class is called directly (unsupported)");
    }
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  Value* rebuild_tensor(const std::vector<Value*>& a, size_t at) {
    MAMBA_CHECK(a.size() == 6 || a.size() == 7, where(at), "_rebuild_tensor_v2 takes 6 or 7 arguments, got ", a.size());
    MAMBA_CHECK(a[0]->kind == Value::Kind::storage, where(at), "_rebuild_tensor_v2's first argument is a ",
                kind_name(a[0]->kind), ", not a storage");
    const Value* storage = a[0];
    std::string what = where(at) + "tensor over storage " + storage->string;
    int64_t offset = integer_of(a[1], what + ": storage offset");
    Shape size = shape_of(a[2], what + ": size");
    Shape stride = shape_of(a[3], what + ": stride");
    MAMBA_CHECK(size.size() == stride.size(), what, ": size ", shape_string(size), " and stride ", shape_string(stride),
                " differ in length");
    int64_t numel = checked_numel(size, dtype_size(storage->dtype), what);
    int64_t storage_numel = storage->tensor.numel();
    MAMBA_CHECK(offset >= 0 && offset <= storage_numel, what, ": storage offset ", offset, " is outside the ",
                storage_numel, "-element storage");

    Value* result = make(Value::Kind::tensor);
    storage_key_of_tensor_[result] = storage->string;
    if (numel == 0) {
      result->tensor = Tensor::empty(size, storage->dtype);
      return result;
    }
    // Last element reached: offset + Σ (size−1)·stride, every term checked for overflow.
    bool contiguous = true;
    int64_t last = offset, expected_stride = 1;
    for (size_t d = size.size(); d-- > 0;) {
      MAMBA_CHECK(stride[d] >= 0, what, ": negative stride ", shape_string(stride));
      int64_t reach = 0;
      MAMBA_CHECK(
          !__builtin_mul_overflow(size[d] - 1, stride[d], &reach) && !__builtin_add_overflow(last, reach, &last), what,
          ": stride ", shape_string(stride), " is too large");
      if (size[d] != 1 && stride[d] != expected_stride) contiguous = false;
      expected_stride *= size[d];  // cannot overflow: bounded by numel
    }
    MAMBA_CHECK(last < storage_numel, what, ": size ", shape_string(size), ", stride ", shape_string(stride),
                " and offset ", offset, " reach element ", last, " of a ", storage_numel, "-element storage");
    // A non-overlapping layout never has more elements than its storage; more means an
    // expanded (stride 0) view, which would multiply memory.
    MAMBA_CHECK(numel <= storage_numel, what, ": size ", shape_string(size), " with stride ", shape_string(stride),
                " repeats storage elements (an expanded view); save it with .contiguous()");
    size_t element = dtype_size(storage->dtype);
    const auto* base = static_cast<const uint8_t*>(storage->tensor.raw());
    if (contiguous) {
      result->tensor = storage->tensor.view({storage_numel}).slice(offset, offset + numel).view(size);
      return result;
    }
    // Not contiguous (e.g. a saved transpose): gather into a fresh row-major tensor.
    uint64_t bytes = uint64_t(numel) * element;
    MAMBA_CHECK(bytes <= copy_budget_, what,
                ": gathering non-contiguous tensors would copy more than 4× the file's size in all (corrupt or "
                "crafted file)");
    copy_budget_ -= bytes;
    result->tensor = Tensor::empty(size, storage->dtype);
    auto* out = static_cast<uint8_t*>(result->tensor.raw());
    std::vector<int64_t> index(size.size(), 0);
    for (int64_t i = 0; i < numel; ++i) {
      int64_t source_element = offset;
      for (size_t d = 0; d < size.size(); ++d) source_element += index[d] * stride[d];
      std::memcpy(out + size_t(i) * element, base + size_t(source_element) * element, element);
      for (size_t d = size.size(); d-- > 0;) {
        if (++index[d] < size[d]) break;
        index[d] = 0;
      }
    }
    return result;
  }

  // BUILD sets state on an object; the only states a state dict carries (an OrderedDict's
  // _metadata, a parameter's attributes) do not change tensor data, so they are dropped.
  void build(size_t at) {
    pop();
    Value* object = pop();
    MAMBA_CHECK(object->kind == Value::Kind::dict || object->kind == Value::Kind::tensor, where(at), "BUILD on a ",
                kind_name(object->kind), " (unsupported)");
    push(object);
  }

  ByteRange code_;
  size_t pos_ = 0;
  std::string source_;
  std::function<Tensor(const std::string&, DType, int64_t)> load_storage_;
  std::deque<Value> arena_;  // stable addresses
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Value*> memo_;
  std::unordered_map<const Value*, std::string> storage_key_of_tensor_;
  uint64_t copy_budget_;
};

}  // namespace

TorchStateDict parse_torch_state_dict(const void* data, size_t size, std::shared_ptr<void> keep_alive,
                                      const std::string& source) {
  ArchiveBytes zip(static_cast<const uint8_t*>(data), size, source);
  std::unordered_map<std::string, ByteRange> members = read_members(zip);

  // The archive's top folder is named after the saved file (archive/, pytorch_model/, ...).
  std::string prefix;
  const ByteRange* pickle = nullptr;
  for (const auto& [name, range] : members) {
    bool top_level =
        name == "data.pkl" || (name.size() > 9 && name.ends_with("/data.pkl") && name.find('/') == name.size() - 9);
    if (!top_level) continue;
    MAMBA_CHECK(pickle == nullptr, source, ": archive holds more than one data.pkl");
    pickle = &range;
    prefix = name.substr(0, name.size() - 8);
  }
  MAMBA_CHECK(pickle != nullptr, source, ": archive has no data.pkl (not a torch.save file)");
  auto byteorder = members.find(prefix + "byteorder");
  if (byteorder != members.end()) {
    std::string order(reinterpret_cast<const char*>(byteorder->second.data), byteorder->second.size);
    MAMBA_CHECK(order == "little", source, ": storages are ", order, "-endian; only little-endian is supported");
  }

  // One flat tensor per storage key, so tensors over the same storage share memory.
  std::unordered_map<std::string, Tensor> storages;
  auto load_storage = [&](const std::string& key, DType dtype, int64_t numel) {
    auto cached = storages.find(key);
    if (cached != storages.end()) {
      MAMBA_CHECK(cached->second.dtype() == dtype && cached->second.numel() == numel, source, ": storage ", key,
                  " is referenced with two different types or sizes");
      return cached->second;
    }
    auto member = members.find(prefix + "data/" + key);
    MAMBA_CHECK(member != members.end(), source, ": storage ", key, " has no member ", prefix, "data/", key);
    std::string what = source + ": storage " + key;
    MAMBA_CHECK(numel >= 0, what, ": negative element count ", numel);
    checked_numel({numel}, dtype_size(dtype), what);
    MAMBA_CHECK(uint64_t(numel) * dtype_size(dtype) <= member->second.size, what, ": ", numel, " elements of ",
                dtype_name(dtype), " need ", uint64_t(numel) * dtype_size(dtype), " bytes, but the member holds ",
                member->second.size);
    Tensor storage = view_or_aligned_copy(member->second.data, {numel}, dtype, keep_alive);
    storages.emplace(key, storage);
    return storage;
  };

  PickleMachine machine(*pickle, source, load_storage, 4 * uint64_t(size));
  const Value* root = machine.run();
  MAMBA_CHECK(root->kind == Value::Kind::dict, source, ": data.pkl holds a ", kind_name(root->kind),
              ", not a state dict");
  TorchStateDict result;
  for (size_t i = 0; i + 1 < root->items.size(); i += 2) {
    const Value* key = root->items[i];
    const Value* value = root->items[i + 1];
    MAMBA_CHECK(key->kind == Value::Kind::string, source, ": state dict key ", i / 2, " is a ", kind_name(key->kind),
                ", not a name");
    MAMBA_CHECK(value->kind == Value::Kind::tensor, source, ": state dict entry ", key->string, " is a ",
                kind_name(value->kind), ", not a tensor");
    result.tensors[key->string] = value->tensor;
    result.storage_of[key->string] = machine.storage_keys().at(value);
  }
  return result;
}

TorchStateDict read_torch_state_dict(const std::string& path) {
  std::shared_ptr<MappedFile> file = map_file(path, "a torch.save file (pytorch_model.bin)");
  void* data = file->data;
  size_t size = file->size;
  return parse_torch_state_dict(data, size, std::move(file), path);
}

}  // namespace mamba::io

#include "payload.hpp"

#include <cstring>
#include <fstream>
#include <sstream>

#include <flatbuffers/idl.h>
#include <flatbuffers/reflection.h>

namespace bus::ctl {

struct JsonCodec::State {
  flatbuffers::Parser parser;
  std::vector<uint8_t> bfbs;  // the schema, serialized: reflection for the verifier
  std::string type;
  explicit State(const flatbuffers::IDLOptions& o) : parser(o) {}
};

namespace {

flatbuffers::IDLOptions options() {
  flatbuffers::IDLOptions o;
  o.strict_json = true;  // output: quoted keys (valid JSON)
  o.indent_step = -1;    // output: one line
  o.output_default_scalars_in_json = true;
  return o;
}

std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& c : s) c = c == '\n' ? ' ' : c;
  return s;
}

}  // namespace

JsonCodec::JsonCodec(std::unique_ptr<State> s) : s_(std::move(s)) {}
JsonCodec::JsonCodec(JsonCodec&&) noexcept = default;
JsonCodec& JsonCodec::operator=(JsonCodec&&) noexcept = default;
JsonCodec::~JsonCodec() = default;

const std::string& JsonCodec::type() const noexcept { return s_->type; }

Expected<JsonCodec> JsonCodec::load(const std::string& fbs_path, const std::string& type) {
  std::ifstream in(fbs_path, std::ios::binary);
  if (!in) return fail(Errc::InvalidArgument, "--schema " + fbs_path + ": cannot read it");
  std::stringstream text;
  text << in.rdbuf();
  const std::string source = text.str();
  auto st = std::make_unique<State>(options());
  const size_t slash = fbs_path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : fbs_path.substr(0, slash + 1);
  const char* includes[] = {dir.c_str(), nullptr};
  if (!st->parser.Parse(source.c_str(), includes, fbs_path.c_str())) {
    return fail(Errc::InvalidArgument, "--schema " + fbs_path + ": " + one_line(st->parser.error_));
  }
  if (!st->parser.SetRootType(type.c_str())) {
    std::string tables;
    for (const auto* sd : st->parser.structs_.vec) {
      if (sd->fixed) continue;
      if (!tables.empty()) tables += ", ";
      tables += sd->defined_namespace->GetFullyQualifiedName(sd->name);
    }
    return fail(Errc::InvalidArgument,
                "--type " + type + ": no such table in " + fbs_path + " (tables: " + tables + ")");
  }
  if (st->parser.root_struct_def_ == nullptr || st->parser.root_struct_def_->fixed) {
    return fail(Errc::InvalidArgument, "--type " + type + ": a struct cannot be a root; name a table");
  }
  st->parser.Serialize();
  const auto* b = st->parser.builder_.GetBufferPointer();
  st->bfbs.assign(b, b + st->parser.builder_.GetSize());
  st->type = type;
  return JsonCodec(std::move(st));
}

Expected<std::vector<uint8_t>> JsonCodec::from_json(std::string_view json) {
  const std::string text(json);
  if (!s_->parser.ParseJson(text.c_str())) {
    return fail(Errc::InvalidArgument, "JSON for " + s_->type + ": " + one_line(s_->parser.error_));
  }
  const auto* b = s_->parser.builder_.GetBufferPointer();
  return std::vector<uint8_t>(b, b + s_->parser.builder_.GetSize());
}

Expected<std::string> JsonCodec::to_json(std::span<const std::byte> payload) const {
  // A copy: aligned for the verifier and the text generator, and stable while they read it.
  std::vector<uint8_t> buf(payload.size());
  if (!payload.empty()) std::memcpy(buf.data(), payload.data(), payload.size());
  const auto* schema = reflection::GetSchema(s_->bfbs.data());
  const auto* root = schema->root_table();
  if (root == nullptr ||
      !flatbuffers::Verify(*schema, *root, buf.data(), buf.size())) {
    return fail(Errc::BadMessage, "not a valid " + s_->type + " FlatBuffer (" + std::to_string(buf.size()) + " bytes)");
  }
  const std::string& id = s_->parser.file_identifier_;
  if (!id.empty() && !flatbuffers::BufferHasIdentifier(buf.data(), id.c_str())) {
    return fail(Errc::BadMessage, "not a " + s_->type + " FlatBuffer: file identifier is not \"" + id + "\"");
  }
  std::string out;
  if (!flatbuffers::GenerateText(s_->parser, buf.data(), &out)) {
    return fail(Errc::BadMessage, s_->type + " FlatBuffer cannot be shown as JSON (a string is not UTF-8)");
  }
  return one_line(std::move(out));
}

}  // namespace bus::ctl
